"""Inspect one image's bytes without a full-resolution decode: format, size, mode, truncation, dHash.

The file is read once; the sha256 checksum comes from the same bytes. The header size is checked before
anything is decoded, then the whole entropy-coded stream is decoded at 1/8 scale and in grey (JPEG draft
mode): that costs a fraction of a full decode yet still reads every coefficient of every component (the
entropy decoder cannot skip one), so truncation and corrupt data surface, and the small grey image is
what the perceptual hash needs. Validation is most of ingest's time, so this path is kept lean: the
decode is the floor (`bench/decode_floor.py`), everything else was measured against it.
"""

import hashlib
import io
import os
import struct

from PIL import Image, ImageFile
from PIL.JpegImagePlugin import JpegImageFile

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest header width*height accepted; real scans are under 1 MP, so this only catches bogus headers."""

HEADER_ERRORS = (OSError, SyntaxError, ValueError, IndexError, TypeError, struct.error)
"""What the JPEG plugin raises on a damaged file (Image.open turns the last four into its
UnidentifiedImageError; we call the plugin directly)."""
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"

# A truncated file must raise, not come back grey-padded: that is how truncation is detected.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def inspect_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Facts about one image file's content.

    Returns bytes, checksum, width, height, mode, phash (None where unknown) and status/error: status is
    'ok' or one of empty, not_jpeg, too_large, truncated, corrupt; error is a message without the file
    name (the caller knows it).
    """
    facts = {"bytes": len(data), "checksum": hashlib.sha256(data).hexdigest(), "width": None, "height": None,
             "mode": None, "phash": None, "status": "ok", "error": None}
    if not data:
        return {**facts, "status": "empty", "error": "zero-byte file"}
    if not data.startswith(JPEG_MAGIC):
        return {**facts, "status": "not_jpeg", "error": f"content is not a JPEG ({_sniff(data)})"}
    try:
        # The JPEG plugin itself, not Image.open: the magic is checked, no format to guess; and no
        # decompression-bomb check of Pillow's own, max_pixels is ours.
        img = JpegImageFile(io.BytesIO(data))
        facts.update(width=img.width, height=img.height, mode=img.mode)  # the header's mode
        if img.width * img.height > max_pixels:
            return {**facts, "status": "too_large",
                    "error": f"header says {img.width}x{img.height}, over the {max_pixels:,}-pixel limit"}
        img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))  # colour scans: Y only
        img.load()
        facts["phash"] = dhash(img)
    except HEADER_ERRORS as exc:
        status = "truncated" if _looks_truncated(data, exc) else "corrupt"
        return {**facts, "status": status, "error": f"{status} JPEG: {exc}"}
    return facts


def inspect_file(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """inspect_bytes of a file; one that cannot be opened or read (a symlink loop, no permission, an I/O
    error) is status `unreadable`, never an exception."""
    try:
        data, _ = read_file(path)
    except OSError as exc:
        return unread("unreadable", f"cannot read it ({exc.strerror})")
    return inspect_bytes(data, max_pixels=max_pixels)


def read_file(path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat of the open file, in one read of the size fstat gives (plus one
    byte, to see a file still growing; its rest is read then): three system calls where a Python file
    object makes six."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        data = os.read(fd, stat.st_size + 1)
        if len(data) > stat.st_size:
            data += b"".join(iter(lambda: os.read(fd, 2**20), b""))
        return data, stat
    finally:
        os.close(fd)


def unread(status: str, error: str) -> dict:
    """The facts of a file whose bytes were never read: every fact unknown, only status and error."""
    return {**dict.fromkeys(("bytes", "checksum", "width", "height", "mode", "phash")), "status": status,
            "error": error}


def printable(name: str) -> str:
    """A file name as text: a name that is not valid UTF-8 (decoded by os.fsdecode, its odd bytes kept
    as surrogates) gets those bytes written as backslash escapes (b'N\\xff1.jpg' -> 'N\\\\xff1.jpg'), which
    Arrow, JSON and a terminal can hold; every other name comes back unchanged."""
    try:
        name.encode()
        return name
    except UnicodeEncodeError:
        return name.encode(errors="surrogateescape").decode(errors="backslashreplace")


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: one bit per horizontally adjacent pair of a 9x8 grey thumbnail, row by
    row, the left pixel brighter than the right one giving a 1; the first pair is the top bit.

    Robust to re-encoding and small resizes, so identical values flag near-duplicate scans.
    """
    grey = img if img.mode == "L" else img.convert("L")
    px = grey.resize((9, 8), Image.Resampling.BILINEAR).tobytes()
    bits = 0
    for row in range(0, 72, 9):
        for left, right in zip(px[row : row + 8], px[row + 1 : row + 9], strict=True):
            bits = (bits << 1) | (left > right)
    return bits


def _looks_truncated(data: bytes, exc: Exception) -> bool:
    # Pillow says 'truncated' when the stream ends mid-scan; a file cut inside its header only shows as
    # a missing end-of-image marker (trailing zero padding from a failed copy is ignored).
    return "truncat" in str(exc).lower() or not data.rstrip(b"\0").endswith(JPEG_EOI)


def _sniff(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return f"{img.format} image"
    except Exception:  # any failure just means "not an image format Pillow knows"
        return f"starts with {data[:8]!r}"
