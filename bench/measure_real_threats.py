"""Real vs synthetic scans, measured the same way: per-class colour and darkness inside the boxes, box
shapes and sizes, and whole-scan colour and texture statistics (issue 12).

    python3 -m bench.measure_real_threats [--real ../shared/sixray-real-dev] [--synth RAW_DIR] [--limit 300]
                                          [--palette]

Per class, over every box (pixels inside the box that are not empty belt: more than 24 levels
away from the belt's colour, the median of the scan's brightest 3%): the median hue (degrees),
saturation and value; `dark` the share of those pixels with
value < 0.45, `blue` the share with hue in 180-260 degrees, `green` 75-180, `orange` 0-75 or > 330;
box aspect (long side / short side), box area as a fraction of the image. Per scan: the empty-belt share,
the belt's colour (median RGB of the empty pixels), the hue mix of object pixels, the mean gradient
magnitude over object pixels (texture), and the share of edge pixels (|gradient| > 40).
The generator's constants in pipeline/xray/ were set against these figures.
"""

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_realism import boxes_of  # the same XML reading as the benchmark's contact sheet

CLASSES = ("gun", "knife", "wrench", "pliers", "scissors")


def hsv(rgb: np.ndarray) -> np.ndarray:
    """HSV in degrees / [0, 1] / [0, 1] from uint8 RGB."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    d = mx - mn + 1e-6
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    return np.stack([h, s, mx], axis=-1)


def belt_colour(rgb: np.ndarray) -> np.ndarray:
    """The empty belt's colour: the median of the brightest 3% of pixels (off-white, varies by scanner)."""
    grey = rgb.astype(np.int16).sum(axis=-1)
    return np.median(rgb[grey >= np.quantile(grey, 0.97)], axis=0)


def objects_mask(rgb: np.ndarray, belt: np.ndarray) -> np.ndarray:
    """Pixels that differ from the belt colour by more than 24 levels in some channel."""
    return np.abs(rgb.astype(np.int16) - belt.astype(np.int16)).max(axis=-1) > 24


def hue_mix(h: np.ndarray) -> tuple[float, float, float]:
    hue = h[..., 0]
    orange = ((hue < 75) | (hue > 330)).mean()
    green = ((hue >= 75) & (hue < 180)).mean()
    blue = ((hue >= 180) & (hue <= 260)).mean()
    return float(orange), float(green), float(blue)


def measure(raw: Path, limit: int) -> dict:
    ids = sorted(p.stem for p in (raw / "JPEGImage").iterdir())
    pos = [i for i in ids if i.startswith("P")][:limit]
    neg = [i for i in ids if i.startswith("N")][: max(3, limit // 10)]
    per_class = {
        c: {
            "hsv": [],
            "aspect": [],
            "area": [],
            "dark": [],
            "blue": [],
            "green": [],
            "orange": [],
            "angle": [],
        }
        for c in CLASSES
    }
    scans = {
        "empty": [],
        "belt": [],
        "orange": [],
        "green": [],
        "blue": [],
        "grad": [],
        "edges": [],
        "dark": [],
    }
    for image_id in pos + neg:
        with Image.open(raw / "JPEGImage" / f"{image_id}.jpg") as im:
            im.draft("RGB", (im.width // 2, im.height // 2)) if im.width > 1500 else None
            rgb = np.asarray(im.convert("RGB"))
        scale = rgb.shape[1] / max(1, _xml_width(raw, image_id) or rgb.shape[1])
        h = hsv(rgb)
        belt = belt_colour(rgb)
        obj = objects_mask(rgb, belt)
        scans["empty"].append(1 - obj.mean())
        scans["belt"].append(belt)
        if obj.any():
            o, g, b = hue_mix(h[obj])
            scans["orange"].append(o)
            scans["green"].append(g)
            scans["blue"].append(b)
            scans["dark"].append(float((h[obj][:, 2] < 0.45).mean()))
            grey = rgb.astype(np.float32).mean(axis=-1)
            gx, gy = np.zeros_like(grey), np.zeros_like(grey)
            gx[:, 1:] = np.abs(np.diff(grey, axis=1))
            gy[1:] = np.abs(np.diff(grey, axis=0))
            grad = np.maximum(gx, gy)
            scans["grad"].append(float(grad[obj].mean()))
            scans["edges"].append(float((grad[obj] > 40).mean()))
        for cls, x0, y0, x1, y1 in boxes_of(raw / "Annotation" / f"{image_id}.xml"):
            if cls not in per_class:
                continue
            x0, y0, x1, y1 = (int(round(v * scale)) for v in (x0, y0, x1, y1))
            crop, cm = h[y0:y1, x0:x1], obj[y0:y1, x0:x1]
            if not cm.any():
                continue
            px = crop[cm]
            d = per_class[cls]
            d["hsv"].append(np.median(px, axis=0))
            d["dark"].append(float((px[:, 2] < 0.45).mean()))
            o, g, b = hue_mix(px)
            d["orange"].append(o)
            d["green"].append(g)
            d["blue"].append(b)
            bw, bh = max(x1 - x0, 1), max(y1 - y0, 1)
            d["aspect"].append(max(bw, bh) / min(bw, bh))
            d["area"].append(bw * bh / (rgb.shape[0] * rgb.shape[1]))
            d["angle"].append(_dark_axis_angle(crop))
    return {"per_class": per_class, "scans": scans, "n": len(pos) + len(neg)}


def _xml_width(raw: Path, image_id: str):
    path = raw / "Annotation" / f"{image_id}.xml"
    if not path.exists():
        return None
    text = ET.parse(path).getroot().findtext("size/width")
    return float(text) if text else None


def _dark_axis_angle(crop: np.ndarray) -> float:
    """Orientation (degrees from the horizontal, 0-90) of the principal axis of the box's dark pixels."""
    ys, xs = np.nonzero(crop[..., 2] < 0.6)
    if len(xs) < 10:
        return float("nan")
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    w, v = np.linalg.eigh(cov)
    ax = v[:, 1]
    return float(np.degrees(np.arctan2(abs(ax[1]), abs(ax[0]))))


def report(name: str, m: dict) -> None:
    print(f"== {name}: {m['n']} scans")
    s = m["scans"]
    belt = np.median(np.array(s["belt"]), axis=0) if s["belt"] else [np.nan] * 3
    print(
        f"  empty belt share {np.median(s['empty']):.2f}  belt RGB {np.round(belt).astype(int).tolist()}"
        f"  object hue mix orange/green/blue {np.median(s['orange']):.2f}/{np.median(s['green']):.2f}/"
        f"{np.median(s['blue']):.2f}  dark {np.median(s['dark']):.3f}"
        f"  texture |grad| {np.median(s['grad']):.1f}"
        f"  edge share {np.median(s['edges']):.3f}"
    )
    print(
        f"  {'class':<9}{'boxes':>6}{'hue':>6}{'sat':>6}{'val':>6}{'dark':>6}{'blue':>6}{'green':>6}"
        f"{'orng':>6}{'aspect':>8}{'area%':>7}{'angle':>7}"
    )
    for cls, d in m["per_class"].items():
        if not d["hsv"]:
            print(f"  {cls:<9}{0:>6}")
            continue
        hue, sat, val = np.median(np.array(d["hsv"]), axis=0)
        print(
            f"  {cls:<9}{len(d['hsv']):>6}{hue:>6.0f}{sat:>6.2f}{val:>6.2f}{np.median(d['dark']):>6.2f}"
            f"{np.median(d['blue']):>6.2f}{np.median(d['green']):>6.2f}{np.median(d['orange']):>6.2f}"
            f"{np.median(d['aspect']):>8.2f}{100 * np.median(d['area']):>7.1f}"
            f"{np.nanmedian(d['angle']):>7.0f}"
        )


def palette(raw: Path, limit: int) -> None:
    """Median RGB of object pixels per hue family and HSV-value band: the colour ramps physics.RAMPS and
    physics.OVERFLOW_BLUE were read from."""
    rng = np.random.default_rng(0)
    pixels = []
    for path in sorted((raw / "JPEGImage").iterdir())[:limit]:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        obj = objects_mask(rgb, belt_colour(rgb))
        p = rgb[obj]
        pixels.append(p[rng.choice(len(p), min(len(p), 20000), replace=False)])
    rgb = np.concatenate(pixels)
    h = hsv(rgb[None])[0]
    print(f"== palette of {raw}: {len(rgb)} object pixels")
    for lo, hi in ((0, 40), (40, 75), (75, 110), (110, 150), (150, 185), (185, 215), (215, 245), (245, 360)):
        fam = (h[:, 0] >= lo) & (h[:, 0] < hi)
        print(f"  hue {lo}-{hi}: {100 * fam.mean():.1f}% of object pixels")
        for v in np.arange(0, 1, 0.1):
            band = fam & (h[:, 2] >= v) & (h[:, 2] < v + 0.1)
            if band.sum() > 50:
                print(
                    f"    value {v:.1f}-{v + 0.1:.1f}: {100 * band.mean():5.2f}%  median RGB "
                    f"{np.median(rgb[band], axis=0).astype(int).tolist()}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "sixray-real-dev"
    )
    parser.add_argument("--synth", type=Path, default=None, help="a `pipeline synth` output folder")
    parser.add_argument("--limit", type=int, default=300, help="positives read per folder")
    parser.add_argument("--palette", action="store_true", help="also print the colour ramps of each folder")
    args = parser.parse_args()
    if args.palette:
        palette(args.real, args.limit)
        if args.synth is not None:
            palette(args.synth, args.limit)
    report(f"real {args.real}", measure(args.real, args.limit))
    if args.synth is not None:
        report(f"synthetic {args.synth}", measure(args.synth, args.limit))


if __name__ == "__main__":
    main()
