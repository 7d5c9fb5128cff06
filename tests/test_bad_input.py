"""A raw folder with every kind of bad input the release (or a broken copy) can hold: each must become
the right status on its row, the run must complete and the exit code must say something was bad."""

import hashlib
import io
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fixture_scope import module_unless_mutmut
from PIL import Image

from base.vocabulary import ALL_CLASSES
from pipeline import labels as labels_module
from pipeline.cli import main
from pipeline.labels import LabelFileError, build_labels, check_header, label_rows
from pipeline.layout import read_annotation
from pipeline.validate import dhash, inspect_bytes, read_file

HEADER = "name,Gun,Knife,Wrench,Pliers,Scissors"


def jpeg(size=(64, 48), mode="RGB", seed=0) -> bytes:
    img = Image.effect_noise(size, 40 + seed).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF0 header claiming another size (nothing else changes)."""
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


def corrupted(data: bytes) -> bytes:
    """Garbage in the middle of the entropy-coded data, header and end marker intact."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A if i % 7 else 0xFF for i, b in enumerate(data[mid:mid + 600])) \
        + data[mid + 600:]


def xml(*objects: tuple[str, tuple]) -> str:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    return f"<annotation><size><width>64</width><height>48</height></size>{body}</annotation>"


def row(name: str, *values: int) -> str:
    return ",".join([name, *map(str, values)])


EXPECTED = {
    "P00001": "ok",  # lower-case class name in its XML
    "P00002": "corrupt",
    "P00003": "truncated",
    "P00004": "empty",
    "P00005": "not_jpeg",  # a PNG named .jpg
    "P00006": "ok",  # CMYK
    "P00007": "ok",  # grayscale
    "P00008": "too_large",  # header 10000x5000: over our 40 MP limit, under Pillow's bomb limit
    "P00021": "too_large",  # header 30000x30000: Pillow's own bomb check fires first
    "P00009": "duplicate_id",  # P00009.jpg and P00009.JPG
    "P00010": "no_image",
    "N0000001": "no_label",
    "P00011": "unknown_class",  # XML box named Bomb
    "P00012": "unknown_class",  # CSV column Grenade marked present
    "P00022": "ok",  # CSV column Grenade marked absent: nothing lost
    "P00013": "bad_xml",
    "P00014": "no_boxes",  # XML whose objects have empty fields
    "P00018": "no_boxes",  # no XML at all
    "P00015": "label_conflict",
    "P00023": "bad_label_row",  # a label cell that is not 1, 0 or -1
    "P00016": "ok",  # named 'P00016.jpg' in the CSV
    "P00017": "ok",  # lower-case CSV header
    "P00019": "ok",  # knife plus a Hammer box
    "P00020": "ok",  # pliers 'difficult' (0)
    "N000037": "ok",  # 6-digit negative id, kept as written
    "N0000002": "ok",
}


@pytest.fixture(scope="module")
def bad_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("bad_raw")
    images, notes, sets = raw / "JPEGImage", raw / "Annotation", raw / "ImageSet"
    for folder in (images, notes, sets / "10", sets / "extra"):
        folder.mkdir(parents=True)
    good = jpeg()
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "orange").save(png, "PNG")
    files = {
        "P00001.jpg": good, "P00002.jpg": corrupted(jpeg(seed=2)), "P00003.jpg": jpeg(seed=3)[:900],
        "P00004.jpg": b"", "P00005.jpg": png.getvalue(), "P00006.jpg": jpeg(mode="CMYK"),
        "P00007.jpg": jpeg(mode="L"), "P00008.jpg": with_header_size(good, 10000, 5000),
        "P00021.jpg": with_header_size(good, 30000, 30000),
        "P00009.jpg": good, "P00009.JPG": jpeg(seed=9), "N0000001.jpg": good,
        **{f"{i}.jpg": jpeg(seed=k) for k, i in enumerate(
            ["P00011", "P00012", "P00022", "P00013", "P00014", "P00018", "P00015", "P00016", "P00017",
             "P00019", "P00020", "P00023", "N000037", "N0000002"])},
    }
    for name, data in files.items():
        (images / name).write_bytes(data)
    box = (1.5, 2.0, 30.25, 40.0)
    notes_text = {
        "P00001": xml(("gun", box)), "P00006": xml(("Knife", box)), "P00007": xml(("Knife", box)),
        "P00011": xml(("Knife", box), ("Bomb", box)), "P00012": xml(("Knife", box)),
        "P00022": xml(("Knife", box)), "P00013": "<annotation><object><name>Knife</name>",
        "P00014": "<annotation><object><name></name><bndbox/></object><object/></annotation>",
        "P00015": xml(("Gun", box)), "P00016": xml(("Wrench", box)), "P00017": xml(("knife", box)),
        "P00019": xml(("Knife", box), ("Hammer", (3, 4, 5, 6))), "P00020": xml(("Pliers", box)),
        "P00009": xml(("Gun", box)),
    }
    for image_id, text in notes_text.items():
        (notes / f"{image_id}.xml").write_text(text)
    knife = (-1, 1, -1, -1, -1)
    (sets / "10" / "train.csv").write_text("\n".join([
        HEADER, row("P00001", 1, -1, -1, -1, -1), *[row(f"P000{i:02d}", *knife) for i in range(2, 10)],
        row("P00021", *knife), row("P00010", *knife), row("P00011", *knife), row("P00013", *knife),
        row("P00014", *knife), row("P00018", *knife), row("P00015", 1, -1, -1, -1, -1),
        row("P00016.jpg", -1, -1, 1, -1, -1), row("P00023", -1, "yes", -1, -1, -1), row("P00019", *knife),
        row("P00020", -1, -1, -1, 0, -1),
        row("N000037", -1, -1, -1, -1, -1), row("N0000002", -1, -1, -1, -1, -1)]) + "\n")
    (sets / "extra" / "test_new.csv").write_text("\n".join([
        "name,gun,knife,wrench,pliers,scissors,Grenade", row("P00012", -1, 1, -1, -1, -1, 1),
        row("P00022", -1, 1, -1, -1, -1, -1), row("P00017", -1, 1, -1, -1, -1, -1),
        row("P00015", -1, -1, -1, -1, -1, -1)]) + "\n")
    return raw


@pytest.fixture(scope=module_unless_mutmut)
def bad_run(bad_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_out")
    result = CliRunner().invoke(main, ["ingest", "--raw", str(bad_raw), "--out", str(out), "--workers", "1",
                                       "--chunk-size", "4"])
    table = pq.read_table(out / "manifest.parquet")
    return result, {r["id"]: r for r in table.to_pylist()}


def test_run_completes_with_exit_code_1(bad_run):
    result, rows = bad_run
    assert result.exit_code == 1, result.output
    assert "label_conflict" in result.output and "no_image" in result.output


def test_every_case_gets_its_status(bad_run):
    _, rows = bad_run
    assert {i: r["status"] for i, r in rows.items()} == EXPECTED


def test_errors_name_the_file_and_problem(bad_run, bad_raw):
    _, rows = bad_run
    assert rows["P00009"]["error"] == "2 files share id P00009: JPEGImage/P00009.JPG, JPEGImage/P00009.jpg"
    assert rows["P00003"]["error"].startswith("JPEGImage/P00003.jpg: truncated JPEG")
    assert rows["P00004"]["error"] == "JPEGImage/P00004.jpg: zero-byte file"
    assert "PNG image" in rows["P00005"]["error"]
    assert "10000x5000" in rows["P00008"]["error"]
    assert rows["P00010"]["error"] == "labelled in 10/train but no JPEGImage/P00010.jpg"
    assert rows["N0000001"]["error"] == "JPEGImage/N0000001.jpg: no label file under ImageSet/ names N0000001"
    assert rows["P00011"]["error"] == "Annotation/P00011.xml: unknown class 'Bomb'"
    assert rows["P00012"]["error"] == \
        "unknown class marked present: Grenade in ImageSet/extra/test_new.csv"
    assert rows["P00013"]["error"].startswith("Annotation/P00013.xml: malformed XML")
    assert rows["P00014"]["error"] == "Annotation/P00014.xml has no boxes"
    assert rows["P00018"]["error"] == "positive without Annotation/P00018.xml"
    assert rows["P00015"]["error"] == \
        "label files disagree on Gun (-1/1): ImageSet/10/train.csv, ImageSet/extra/test_new.csv"
    assert rows["P00023"]["error"] == \
        "bad label row: ImageSet/10/train.csv line 19: 'yes' for Knife (valid: 1, 0, -1)"
    assert all(r["error"] is None for r in rows.values() if r["status"] == "ok")


def test_labels_boxes_and_modes(bad_run, bad_raw):
    _, rows = bad_run
    assert rows["P00001"]["gun"] == 1 and rows["P00001"]["boxes"] == [
        {"cls": "gun", "xmin": 1.5, "ymin": 2.0, "xmax": 30.25, "ymax": 40.0}]
    assert rows["P00006"]["mode"] == "CMYK" and rows["P00007"]["mode"] == "L"
    assert rows["P00016"]["wrench"] == 1 and rows["P00016"]["official"] == ["10/train"]
    assert rows["P00017"]["knife"] == 1 and rows["P00017"]["official"] == ["extra/test_new"]
    assert rows["P00017"]["boxes"][0]["cls"] == "knife"
    assert rows["P00015"]["gun"] is None and rows["P00015"]["knife"] == 0  # only the disputed class unknown
    assert rows["P00019"]["hammer"] == 1
    assert [b["cls"] for b in rows["P00019"]["boxes"]] == ["knife", "hammer"]
    assert rows["P00020"]["pliers"] == 1 and rows["P00020"]["difficult"] == ["pliers"]
    assert rows["N000037"]["gun"] == 0 and rows["N000037"]["path"] == "JPEGImage/N000037.jpg"
    data = (bad_raw / "JPEGImage/P00002.jpg").read_bytes()
    assert rows["P00002"]["checksum"] == hashlib.sha256(data).hexdigest()
    assert rows["P00008"]["width"] == 10000 and rows["P00008"]["phash"] is None


def test_split_only_for_usable_rows(bad_run):
    _, rows = bad_run
    for r in rows.values():
        assert (r["split"] is not None) == (r["status"] in ("ok", "no_boxes")), r["id"]


def test_truncation_vs_corruption_at_every_cut():
    data = jpeg((128, 96), seed=5)
    assert inspect_bytes(data)["status"] == "ok"
    for cut in (10, 200, len(data) // 3, len(data) - 10):
        assert inspect_bytes(data[:cut])["status"] == "truncated", cut
    assert inspect_bytes(corrupted(data))["status"] == "corrupt"
    assert inspect_bytes(b"hello")["status"] == "not_jpeg"


def test_read_file_reads_past_the_size_fstat_gave(tmp_path):
    data = jpeg((64, 48), seed=2)
    (tmp_path / "a.jpg").write_bytes(data)
    read, stat = read_file(tmp_path / "a.jpg")
    assert read == data and stat.st_size == len(data)
    proc = Path("/proc/version")  # fstat says 0 bytes, like a file still being written
    if proc.exists():
        assert proc.stat().st_size == 0 and read_file(proc)[0] == proc.read_bytes() != b""


def test_dhash_bits_by_hand():
    """A 9x8 grey image (resized to itself): bit = left pixel brighter than its right neighbour, row by
    row, the first pair the top bit."""
    falling, rising = list(range(90, 0, -10)), list(range(10, 100, 10))
    stripes = Image.frombytes("L", (9, 8), bytes((falling + rising) * 4))
    assert dhash(stripes) == 0xFF00FF00FF00FF00
    first_pair = Image.frombytes("L", (9, 8), bytes([200] + [0] * 71))
    assert dhash(first_pair) == 1 << 63
    assert dhash(first_pair.convert("RGB")) == 1 << 63  # a colour image is hashed in grey


def test_phash_is_the_dhash_of_the_grey_eighth_and_mode_comes_from_the_header():
    data = jpeg((256, 192), seed=3)
    facts = inspect_bytes(data)
    small = Image.open(io.BytesIO(data))
    small.draft("L", (32, 24))
    assert small.size == (32, 24) and facts["mode"] == "RGB"
    assert facts["phash"] == dhash(small.convert("L"))


def test_unreadable_label_files_are_skipped_and_named(tmp_path):
    (tmp_path / "ImageSet").mkdir()
    good = tmp_path / "ImageSet" / "good.csv"
    good.write_text(HEADER + "\n" + row("P00001", 1, -1, -1, -1, -1) + "\n")
    cases = {"a.csv": "id,Gun,Knife\nP00001,1,-1\n", "b.csv": "name,Gun,Knife\nP00001,1,-1\n",
             "c.csv": "", "d.csv": HEADER.replace(",", ";") + "\nP00001;1;-1;-1;-1;-1\n"}
    for name, text in cases.items():
        (tmp_path / "ImageSet" / name).write_text(text)
    summary = build_labels(tmp_path, tmp_path / "labels.parquet")
    errors = {s["file"]: s["error"] for s in summary["skipped_files"]}
    assert list(errors) == [f"ImageSet/{n}" for n in cases]
    assert errors["ImageSet/a.csv"].endswith(
        "a.csv: first header column must be 'name', got ['id', 'Gun', 'Knife']")
    assert errors["ImageSet/b.csv"].endswith(
        "b.csv: header lacks the class column(s) Wrench, Pliers, Scissors")
    assert "c.csv: empty file" in errors["ImageSet/c.csv"]
    assert errors["ImageSet/d.csv"].endswith("d.csv: columns separated by ';'; SIXray label files use commas")
    rows = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert [(r["id"], r["gun"], r["official"]) for r in rows] == [("P00001", 1, ["good"])]
    assert not list(tmp_path.glob(".*")), "no temp files or row folders left"


def test_without_a_readable_label_file_the_labels_table_is_empty(tmp_path):
    (tmp_path / "ImageSet").mkdir()
    (tmp_path / "ImageSet" / "c.csv").write_text("")
    (tmp_path / "ImageSet" / "notes.txt").write_text(HEADER + "\n")  # not a CSV: not a label file
    summary = build_labels(tmp_path, tmp_path / "labels.parquet")
    assert (summary["label_files"], summary["labelled_ids"], len(summary["skipped_files"])) == (["c"], 0, 1)
    assert (tmp_path / "labels.json").exists()  # the summary, beside the labels
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.num_rows == 0
    assert table.column_names == ["id", "official", *ALL_CLASSES, "difficult", "problems"]


def test_headers_that_are_refused_and_a_trailing_comma_that_is_not():
    classes = HEADER.split(",")
    assert check_header("f.csv", [*classes, "", " "]) == classes
    for header, message in [
        ([], f"f.csv: empty file; a label file starts with the header '{HEADER}'"),
        ([HEADER.replace(",", ";"), ""], "f.csv: columns separated by ';'; SIXray label files use commas"),
        ([" ", ""], "f.csv: first header column must be 'name', got ['']"),
        ([*classes, "gun"], "f.csv: class 'Gun' appears twice in the header"),
    ]:
        with pytest.raises(LabelFileError) as refused:
            check_header("f.csv", header)
        assert str(refused.value) == message


def test_label_rows_in_batches_and_rows_that_are_not_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(labels_module, "ROWS_BATCH", 2)
    (tmp_path / "ImageSet").mkdir()
    path = tmp_path / "ImageSet" / "a.csv"
    path.write_text(HEADER + "\n" + "".join(row(f"P0000{i}", 1, -1, -1, -1, -1) + "\n" for i in range(1, 6)))
    batches = list(label_rows(tmp_path, path, 7))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    rows = [r for b in batches for r in b.to_pylist()]
    assert [(r["id"], r["k"], r["file"], r["line"], r["gun"]) for r in rows] == [
        (f"P0000{i}", 7, "ImageSet/a.csv", i + 1, "1") for i in range(1, 6)]
    path.write_text(HEADER + "\nP00001,1,-1\n")  # the only row is short
    (short,) = [r for b in label_rows(tmp_path, path, 0) for r in b.to_pylist()]
    assert short["problem"] == "ImageSet/a.csv line 2: 3 fields, the header has 6" and short["gun"] is None
    path.write_text(HEADER + "\n" + "x" * 200_000 + "\n")  # over the csv module's field limit
    with pytest.raises(LabelFileError, match="a.csv: line 2: not CSV \\(field larger than field limit"):
        list(label_rows(tmp_path, path, 0))


def test_annotation_objects_kept_skipped_and_reported(tmp_path):
    def obj(name, **box):
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in box.items())
        return f"<object><name>{name}</name><bndbox>{coords}</bndbox></object>"

    box = {"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40}
    (tmp_path / "Annotation").mkdir()
    xml = tmp_path / "Annotation" / "P00001.xml"
    xml.write_text("<annotation>" + obj("Gun", **box).replace("</object>", "<part><name>grip</name><bndbox>"
                   "<xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part></object>")
                   + obj("", **box) + obj("Bomb", **box) + obj("Knife", xmin=1, ymin=2, xmax=30)
                   + obj("Pliers", **{**box, "xmin": "nan"}) + obj("Scissors", **box) + "</annotation>")
    boxes, problems = read_annotation(xml, tmp_path)
    assert boxes == [{"cls": "gun", "xmin": 1.0, "ymin": 2.0, "xmax": 30.0, "ymax": 40.0},
                     {"cls": "scissors", "xmin": 1.0, "ymin": 2.0, "xmax": 30.0, "ymax": 40.0}]
    assert problems == [
        {"status": "unknown_class", "error": "Annotation/P00001.xml: unknown class 'Bomb'"},
        {"status": "bad_xml", "error": "Annotation/P00001.xml: Knife box has a missing or bad coordinate"},
        {"status": "bad_xml", "error": "Annotation/P00001.xml: Pliers box has a non-finite coordinate"}]
    (tmp_path / "Annotation" / "P00002.xml").mkdir()  # cannot be read
    assert read_annotation(tmp_path / "Annotation" / "P00002.xml", tmp_path) == (
        [], [{"status": "bad_xml", "error": "Annotation/P00002.xml: cannot read it (Is a directory)"}])


def test_cells_unknown_classes_and_problem_rows_of_one_batch(tmp_path):
    (tmp_path / "ImageSet").mkdir()
    path = tmp_path / "ImageSet" / "a.csv"
    path.write_text(HEADER + ",Bomb,Axe\nP00001,1,,-1,-1,-1,0,1\nP00002,1,-1\nP00003,yes,-1,-1,-1,-1,,\n"
                    "P00004,-1,-1,-1,-1,-1,,0\n")
    rows = [r for b in label_rows(tmp_path, path, 0) for r in b.to_pylist()]
    assert [(r["gun"], r["knife"], r["unknown"], r["problem"]) for r in rows] == [
        ("1", None, "Bomb, Axe", None),  # an empty cell is no value; 0 (difficult) marks a class too
        (None, None, "", "ImageSet/a.csv line 3: 3 fields, the header has 8"),
        (None, "-1", "", "ImageSet/a.csv line 4: 'yes' for Gun (valid: 1, 0, -1)"),
        ("-1", "-1", "Axe", None)]


def test_an_unknown_class_marked_in_two_files_is_one_problem_naming_both(tmp_path):
    (tmp_path / "ImageSet").mkdir()
    for name in ("a", "b"):
        (tmp_path / "ImageSet" / f"{name}.csv").write_text(HEADER + ",Bomb\nP00001,1,-1,-1,-1,-1,1\n")
    build_labels(tmp_path, tmp_path / "labels.parquet")
    (labelled,) = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert labelled["problems"] == [{"status": "unknown_class", "error": "unknown class marked present: "
                                     "Bomb in ImageSet/a.csv; Bomb in ImageSet/b.csv"}]


def test_more_than_64_label_files_and_quotes_in_their_names(tmp_path):
    (tmp_path / "ImageSet").mkdir()
    names = [f"f{k:02d}" for k in range(65)] + ["it's"]  # the file masks span two 64-bit words
    text = HEADER + "\n" + row("P00001", 1, -1, -1, -1, -1) + "\n"
    for name in names:
        (tmp_path / "ImageSet" / f"{name}.csv").write_text(text)
    (tmp_path / ".labels.rows").mkdir()  # left by a killed run
    build_labels(tmp_path, tmp_path / "labels.parquet")
    (labelled,) = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert labelled["official"] == sorted(names) and labelled["gun"] == 1
