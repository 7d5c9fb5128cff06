"""`pipeline ingest` on the real sample, determinism, resume after a kill, and a crash mid-write."""

import csv
import errno
import hashlib
import io
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest
from PIL import Image

from base.vocabulary import CLASSES, CSV_COLUMNS
from pipeline import ingest as ingest_module
from pipeline.ingest import ingest
from pipeline.schema import MANIFEST_SCHEMA
from pipeline.stats import compute_stats


def manifest_rows(out):
    return {r["id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def output_bytes(out):
    return (out / "manifest.parquet").read_bytes(), (out / "manifest.summary.json").read_bytes()


def make_raw(root, n_pos: int, n_neg: int, size=(96, 80)):
    """A small valid raw folder: noise JPEGs, one knife box per positive, one label file."""
    (root / "JPEGImage").mkdir(parents=True)
    (root / "Annotation").mkdir()
    (root / "ImageSet" / "10").mkdir(parents=True)
    lines = ["name,Gun,Knife,Wrench,Pliers,Scissors"]
    ids = [f"P{i:05d}" for i in range(1, n_pos + 1)] + [f"N{i:07d}" for i in range(1, n_neg + 1)]
    for k, image_id in enumerate(ids):
        buf = io.BytesIO()
        Image.effect_noise(size, 30 + k % 50).convert("RGB").save(buf, "JPEG", quality=85)
        (root / "JPEGImage" / f"{image_id}.jpg").write_bytes(buf.getvalue())
        positive = image_id.startswith("P")
        lines.append(f"{image_id},-1,{1 if positive else -1},-1,-1,-1")
        if positive:
            (root / "Annotation" / f"{image_id}.xml").write_text(
                "<annotation><object><name>Knife</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax>"
                "<ymax>40</ymax></bndbox></object></annotation>")
    (root / "ImageSet" / "10" / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_real_sample_gives_what_its_files_say(shared, tmp_path):
    raw = shared / "sixray-sample"
    summary = ingest(raw, tmp_path, workers=1)
    rows = manifest_rows(tmp_path)
    assert sorted(rows) == ["N0052516", "N0052517", *(f"P0000{i}" for i in range(2, 8))]
    assert summary["by_status"] == {"ok": 8} and summary["label_files"] == ["10/test", "10/train"]
    for image_id, r in rows.items():
        path = raw / "JPEGImage" / f"{image_id}.jpg"
        with Image.open(path) as img:
            assert (r["width"], r["height"], r["mode"]) == (*img.size, img.mode)
        assert r["checksum"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert r["bytes"] == path.stat().st_size
        positive = image_id.startswith("P")
        assert (r["gun"], r["knife"], r["wrench"], r["pliers"], r["scissors"]) == (0, int(positive), 0, 0, 0)
        if positive:  # boxes exactly as the XML says
            objects = ET.parse(raw / "Annotation" / f"{image_id}.xml").getroot().iter("object")
            expected = [(o.findtext("name").lower(), *(float(o.findtext(f"bndbox/{k}"))
                         for k in ("xmin", "ymin", "xmax", "ymax"))) for o in objects]
            got = [(b["cls"], b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in r["boxes"]]
            assert [g[0] for g in got] == [e[0] for e in expected]
            assert [g[1:] for g in got] == [pytest.approx(e[1:], abs=1e-3) for e in expected]
    assert len(rows["P00002"]["boxes"]) == 2 and rows["P00002"]["boxes"][0]["xmin"] == pytest.approx(224.931)
    assert rows["N0052516"]["official"] == ["10/train"] and rows["N0052516"]["boxes"] == []
    assert rows["N0052517"]["official"] == ["10/test"] and rows["P00005"]["official"] == ["10/test"]
    meta = pq.read_schema(tmp_path / "manifest.parquet")
    assert meta.equals(MANIFEST_SCHEMA) and meta.metadata[b"raw_root"] == str(raw.resolve()).encode()


def test_same_bytes_whatever_the_chunking_and_workers(shared, tmp_path):
    raw = shared / "sixray-sample"
    ingest(raw, tmp_path / "a", workers=1, chunk_size=3)
    ingest(raw, tmp_path / "b", workers=2, chunk_size=100)
    assert output_bytes(tmp_path / "a") == output_bytes(tmp_path / "b")
    other_seed = ingest(raw, tmp_path / "c", workers=1, seed=1)
    assert other_seed["seed"] == 1 and output_bytes(tmp_path / "c") != output_bytes(tmp_path / "a")


def test_rerun_skips_done_chunks_and_redoes_changed_ones(tmp_path):
    raw = make_raw(tmp_path / "raw", 6, 14)
    first = ingest(raw, tmp_path / "out", workers=1, chunk_size=5)
    assert first["chunks_done_before"] == 0 and first["total"] == 20
    assert ingest(raw, tmp_path / "out", workers=1, chunk_size=5)["chunks_done_before"] == 4
    # A new id sorting last makes a fifth chunk: only that one is done, and the manifest has it.
    (raw / "JPEGImage" / "P00099.jpg").write_bytes((raw / "JPEGImage" / "N0000001.jpg").read_bytes())
    again = ingest(raw, tmp_path / "out", workers=1, chunk_size=5)
    assert again["chunks_done_before"] == 4 and again["total"] == 21
    assert manifest_rows(tmp_path / "out")["P00099"]["status"] == "no_label"
    # A changed chunk (an image renamed inside chunk 1) is redone, not trusted.
    (raw / "JPEGImage" / "N0000007.jpg").rename(raw / "JPEGImage" / "N0000007.JPEG")
    assert ingest(raw, tmp_path / "out", workers=1, chunk_size=5)["chunks_done_before"] == 4
    assert manifest_rows(tmp_path / "out")["N0000007"]["path"] == "JPEGImage/N0000007.JPEG"


def test_killed_then_resumed_equals_uninterrupted(tmp_path):
    raw = make_raw(tmp_path / "raw", 150, 450, size=(320, 288))
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "ingest", "--raw", str(raw),
           "--out", str(killed), "--workers", "1", "--chunk-size", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((killed / "_ingest").glob("images-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    done = len(list((killed / "_ingest").glob("images-*.parquet")))
    assert 3 <= done < 60 and not (killed / "manifest.parquet").exists(), "killed mid-run"
    resumed = ingest(raw, killed, workers=2, chunk_size=10)
    assert resumed["chunks_done_before"] == done
    ingest(raw, tmp_path / "clean", workers=2, chunk_size=10)
    assert output_bytes(killed) == output_bytes(tmp_path / "clean")
    assert not list(killed.rglob(".*.tmp-*")), "no temp files left behind"


def test_disk_full_mid_write_keeps_earlier_outputs(tmp_path, monkeypatch):
    raw = make_raw(tmp_path / "raw", 4, 8)
    out = tmp_path / "out"
    ingest(raw, out, workers=1, chunk_size=4)
    before = output_bytes(out)
    untouched = {p: p.read_bytes() for p in sorted((out / "_ingest").glob("*.*"))}
    (raw / "JPEGImage" / "N0000009.jpg").write_bytes((raw / "JPEGImage" / "N0000001.jpg").read_bytes())

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:  # the changed chunk cannot be written
        m.setattr(ingest_module, "write_parquet", disk_full)
        with pytest.raises(OSError, match="No space"):
            ingest(raw, out, workers=1, chunk_size=4)
    with monkeypatch.context() as m:  # the manifest cannot be written
        m.setattr(ingest_module.pq.ParquetWriter, "write_table", disk_full)
        with pytest.raises(OSError, match="No space"):
            ingest(raw, out, workers=1, chunk_size=4)
    assert output_bytes(out) == before, "the previous manifest is intact"
    assert not list(out.rglob(".*.tmp-*")), "no temp files left behind"
    assert len(untouched) == 6, "3 parts, labels and their summary, state"
    assert all(p.read_bytes() == data for p, data in untouched.items()), "the last run's files are intact"
    ingest(raw, out, workers=1, chunk_size=4)
    assert "N0000009" in manifest_rows(out)


def test_synth_ingest_stats_round_trip(tmp_path):
    synth = pytest.importorskip("pipeline.xray.synth")
    raw = tmp_path / "raw"
    synth.synthesize(raw, positives=30, negatives=60, size_factor=0.25, workers=2)
    summary = ingest(raw, tmp_path / "manifests", workers=2, chunk_size=40)
    assert summary["total"] == 90 and summary["bad"] == 0
    # The hand count: straight from the generator's own label files and XMLs.
    labels = {}
    for f in sorted((raw / "ImageSet").rglob("*.csv")):
        for rec in csv.DictReader(f.read_text().splitlines()):
            labels[rec["name"]] = tuple(int(rec[c] != "-1") for c in CSV_COLUMNS)
    xmls = (raw / "Annotation").glob("*.xml")
    boxes = {p.stem: len(list(ET.parse(p).getroot().iter("object"))) for p in xmls}
    rows = manifest_rows(tmp_path / "manifests")
    assert {i: tuple(r[c] for c in CLASSES) for i, r in rows.items()} == labels
    assert {i: len(r["boxes"]) for i, r in rows.items() if r["boxes"]} == \
        {i: n for i, n in boxes.items() if n}
    report = compute_stats(tmp_path / "manifests")["manifest"]
    table = report["table1"]["all"]
    assert table["positive"] == sum(any(v) for v in labels.values()) == 30 and table["negative"] == 60
    for k, cls in enumerate(CLASSES):
        assert table[cls] == sum(v[k] for v in labels.values())
    assert report["table1"]["test"]["total"] == 18 and report["status"] == {"ok": 90}
    assert report["official"]["10/train"]["rows"] + report["official"]["10/test"]["rows"] == 90


def test_dask_cluster_gives_the_same_manifest(shared, tmp_path):
    distributed = pytest.importorskip("distributed")
    raw = shared / "sixray-sample"
    ingest(raw, tmp_path / "local", workers=1, chunk_size=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        summary = ingest(raw, tmp_path / "dask", scheduler=client, chunk_size=3)
    assert summary["total"] == 8
    assert output_bytes(tmp_path / "dask") == output_bytes(tmp_path / "local")
