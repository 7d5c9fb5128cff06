"""Incremental `pipeline ingest`: after new, changed and deleted scans a rerun validates only what changed,
says so, and writes the same bytes as a clean run over the same folder."""

import io
import os

import pytest
from click.testing import CliRunner
from PIL import Image
from test_ingest import make_raw, manifest_rows, output_bytes

from pipeline import ingest as ingest_module
from pipeline.cli import main
from pipeline.ingest import ingest

CHANGES = ("added", "changed", "removed", "unchanged", "validated")


def changes(result: dict) -> dict:
    return {k: result[k] for k in CHANGES}


@pytest.fixture
def validated(monkeypatch):
    """The image files validated (workers=1 runs the chunk tasks in this process)."""
    seen = []

    def inspect_file(path, **kwargs):
        seen.append(os.path.basename(path))
        return real(path, **kwargs)

    real = ingest_module.inspect_file
    monkeypatch.setattr(ingest_module, "inspect_file", inspect_file)
    return seen


def add_scans(raw, images: dict[str, str]) -> None:
    """New scans {new id: id whose bytes it copies}, each with a label row (a negative)."""
    folder = raw / "JPEGImage"
    for new, source in images.items():
        (folder / f"{new}.jpg").write_bytes((folder / f"{source}.jpg").read_bytes())
    with open(raw / "ImageSet" / "10" / "train.csv", "a") as f:
        f.writelines(f"{new},-1,-1,-1,-1,-1\n" for new in images)


def test_rerun_validates_only_new_and_changed_scans(tmp_path, validated):
    raw, out = make_raw(tmp_path / "raw", 6, 24), tmp_path / "out"
    first = ingest(raw, out, workers=1, chunk_size=8)
    assert changes(first) == {"added": 30, "changed": 0, "removed": 0, "unchanged": 0, "validated": 30}
    images = raw / "JPEGImage"
    # One new id sorts last, two among the existing ones (so later chunks shift).
    add_scans(raw, {"P00007": "P00001", "N0000030": "N0000001", "N00000125": "N0000002"})
    buf = io.BytesIO()
    Image.effect_noise((64, 48), 90).convert("RGB").save(buf, "JPEG")
    (images / "N0000008.jpg").write_bytes(buf.getvalue())  # new content: other size and mtime
    touched = (images / "N0000015.jpg").stat()  # same bytes, later mtime: validated again all the same
    os.utime(images / "N0000015.jpg", ns=(touched.st_atime_ns, touched.st_mtime_ns + 10**9))
    (images / "N0000020.jpg").unlink()
    validated.clear()
    result = CliRunner().invoke(main, ["ingest", "--raw", str(raw), "--out", str(out), "--workers", "1",
                                       "--chunk-size", "8"])
    assert result.exit_code == 1, result.output  # N0000020 is still in the label file: no_image
    assert "images: 3 added, 2 changed, 1 removed, 27 unchanged (5 validated)" in result.output
    assert sorted(validated) == ["N0000008.jpg", "N00000125.jpg", "N0000015.jpg", "N0000030.jpg",
                                 "P00007.jpg"]
    rows = manifest_rows(out)
    assert rows["N0000020"]["status"] == "no_image" and rows["N0000030"]["status"] == "ok"
    assert ingest(raw, tmp_path / "clean", workers=1, chunk_size=8)["validated"] == 32
    assert output_bytes(out) == output_bytes(tmp_path / "clean")


def test_unchanged_rerun_skips_validation_and_the_manifest(tmp_path, validated):
    raw, out = make_raw(tmp_path / "raw", 6, 24), tmp_path / "out"
    ingest(raw, out, workers=1, chunk_size=8)
    before, stamp = output_bytes(out), (out / "manifest.parquet").stat().st_mtime_ns
    validated.clear()
    again = ingest(raw, out, workers=1, chunk_size=8)
    assert changes(again) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 30, "validated": 0}
    assert again["chunks_done_before"] == 4 and not again["manifest_written"] and validated == []
    assert (out / "manifest.parquet").stat().st_mtime_ns == stamp and output_bytes(out) == before
    (out / "manifest.parquet").unlink()  # an output gone is written again, from the parts
    assert ingest(raw, out, workers=1, chunk_size=8)["manifest_written"] and output_bytes(out) == before
    assert validated == []


def test_changed_xml_is_parsed_again_without_validating_its_image(tmp_path, validated):
    raw, out = make_raw(tmp_path / "raw", 6, 24), tmp_path / "out"
    ingest(raw, out, workers=1, chunk_size=8)
    xml = raw / "Annotation" / "P00003.xml"
    xml.write_text(xml.read_text().replace("<xmin>1</xmin>", "<xmin>5</xmin>"))
    validated.clear()
    again = ingest(raw, out, workers=1, chunk_size=8)
    assert changes(again) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 30, "validated": 0}
    assert manifest_rows(out)["P00003"]["boxes"][0]["xmin"] == 5 and validated == []
    ingest(raw, tmp_path / "clean", workers=1, chunk_size=8)
    assert output_bytes(out) == output_bytes(tmp_path / "clean")


def test_crash_before_the_state_is_saved_counts_against_the_last_good_run(tmp_path, monkeypatch):
    raw, out = make_raw(tmp_path / "raw", 6, 24), tmp_path / "out"
    ingest(raw, out, workers=1, chunk_size=8)
    add_scans(raw, {"P00007": "P00001"})
    (raw / "JPEGImage" / "N0000020.jpg").unlink()

    def crash(path, obj):
        if path.name == "state.json":
            raise KeyboardInterrupt("killed")
        real(path, obj)

    real = ingest_module.write_json
    with monkeypatch.context() as m:
        m.setattr(ingest_module, "write_json", crash)
        with pytest.raises(KeyboardInterrupt):
            ingest(raw, out, workers=1, chunk_size=8)
    again = ingest(raw, out, workers=1, chunk_size=8)
    assert changes(again) == {"added": 1, "changed": 0, "removed": 1, "unchanged": 29, "validated": 0}
    ingest(raw, tmp_path / "clean", workers=1, chunk_size=8)
    assert output_bytes(out) == output_bytes(tmp_path / "clean")
    assert len(list((out / "_ingest").glob("images-*"))) == 4, "parts of the crashed run's state deleted"


def test_the_manifest_bytes_do_not_depend_on_the_chunking(tmp_path):
    """Chunks of 1, 3 and 50 ids give parts, and manifest queries, of other sizes: the same bytes."""
    raw = make_raw(tmp_path / "raw", 6, 24)
    with open(raw / "ImageSet" / "10" / "train.csv", "a") as f:  # labelled, no image: between two ranges
        f.write("N00000125,-1,-1,-1,-1,-1\n")
    for size in (1, 3, 50):
        ingest(raw, tmp_path / f"chunks-{size}", workers=1, chunk_size=size)
    manifests = {(tmp_path / f"chunks-{size}" / "manifest.parquet").read_bytes() for size in (1, 3, 50)}
    assert len(manifests) == 1
