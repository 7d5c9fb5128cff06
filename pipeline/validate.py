"""Inspect one image's bytes without a full-resolution decode: format, size, mode, truncation, dHash.

The file is read once; the sha256 checksum comes from the same bytes. The header size is checked before
anything is decoded, then the whole entropy-coded stream is decoded at 1/8 scale (JPEG draft mode):
that costs a fraction of a full decode yet still reads every coefficient, so truncation and corrupt
data surface, and the small image is enough for a perceptual hash.
"""

import hashlib
import io
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest header width*height accepted; real scans are under 1 MP, so this only catches bogus headers."""

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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        facts.update(width=img.width, height=img.height, mode=img.mode)
        if img.width * img.height > max_pixels:
            return {**facts, "status": "too_large",
                    "error": f"header says {img.width}x{img.height}, over the {max_pixels:,}-pixel limit"}
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()
        facts["phash"] = dhash(img)
    except Image.DecompressionBombError as exc:
        return {**facts, "status": "too_large", "error": str(exc)}
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        status = "truncated" if _looks_truncated(data, exc) else "corrupt"
        return {**facts, "status": status, "error": f"{status} JPEG: {exc}"}
    return facts


def inspect_file(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """inspect_bytes of a file; one that cannot be opened or read (a symlink loop, no permission, an I/O
    error) is status `unreadable`, never an exception."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return unread("unreadable", f"cannot read it ({exc.strerror})")
    return inspect_bytes(data, max_pixels=max_pixels)


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
    """64-bit difference hash: one bit per horizontally adjacent pair of a 9x8 grey thumbnail.

    Robust to re-encoding and small resizes, so identical values flag near-duplicate scans.
    """
    small = img.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
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
