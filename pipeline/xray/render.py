"""Render one SIXray-like dual-energy X-ray scan: bags, their clutter and the threats, as an RGB image.

Physics (the formulas live in physics.py, shared with `pipeline tip`): every object adds thickness to
one of three per-pixel material maps (organic, inorganic, metal). Transmission at the two energies is
T(E) = exp(-sum_m mu_m(E) t_m), so overlapping objects multiply transmissions (add in log space) and
stay translucent. Colour follows the scanner's mapping, fitted to the real scans (physics.PALETTE): the
material ratio R = ln T_low / ln T_high picks the family (beige-orange organic, olive mixed, green
inorganic, teal to blue-teal metal) and the mean transmission how dark it is, so empty belt is the belt's
colour and dense stacks go dark green-black. Shapes are polygons drawn with PIL on small per-object
canvases (rotation and foreshortening transform the vertices, never an image), then added into the maps
with numpy.

What a scan models (issue 12), and the real statistics it was checked against (bench/
measure_real_threats.py on the 53 scans of ../shared/sixray-real-dev, generator at size factor 1.0):
- the scene: one bag (70%), two (22%) or three (8%) side by side, each filling part of the frame and
  tilted a little, so about 60% of the scan is empty belt (real: median 0.59, synthetic 0.62);
- clutter: translucent clothes, tangles of cables, electronics (boards with traces and components),
  scattered small metal bits (zipper pulls, buckles, rings), bottles, books, shoes, keys, coins,
  umbrellas, pouches; texture measured as the mean |gradient| over object pixels (real 16.4, synthetic
  14.8) and the share of edge pixels (real 0.10, synthetic 0.11); fewer items than before 2026-11-28
  (issue 12: piles of dense clutter on every threat hid it, and the real threats stand out clearly);
- threats (shapes.py): parametric silhouettes with their parts' materials and densities; box aspect,
  HSV value and dark share per class were compared with the real boxes (bench/RESULTS.md); laid near
  the belt's axes, three times as often along it as across (the real boxes' dark-pixel axis lies a median
  9-28 degrees off the belt's axis for every class but pliers, 70; ours now 6-21, pliers included; the
  former uniform rotation of half the threats gave 25-47);
- the scanner: the belt's colour (real median RGB 227,227,225, from near-white to light grey),
  a noisy streak across the belt near the top on 30% of scans, saturated blue for dense metal stacks on
  35% of scans (physics.OVERFLOW_BLUE; 3% of the real object pixels), low-frequency density spots,
  slight blur and edge enhancement.
Box sizes, classes per image and image sizes come from the real positives' box file (real_stats.py).

`--difficulty` (0-1) keeps its meaning: harder scans have smaller threats (synth.box_area), more clutter,
more threats rotated anywhere rather than along the belt's axes (a share difficulty squared), more
foreshortened, fainter, and with more dense clutter piled on them, and more metal look-alikes.

Everything here is pure: the caller hands in a numpy Generator and gets pixels and boxes back.
"""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.xray import shapes
from pipeline.xray.physics import attenuation, colourise
from pipeline.xray.shapes import LOOP, POLY

LEVELS = 200.0
"""Canvas grey level that stands for an object's thickest part (8-bit canvases, headroom for noise)."""

# ---------------------------------------------------------------- the scene


class Scene:
    """Per-material thickness maps of one scan, filled object by object."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.thickness = np.zeros((3, height, width), dtype=np.float32)

    def draw(self, parts, cx, cy, scale, angle=0.0, squash=1.0, density=1.0):
        """Add an object given in local units, scaled, foreshortened (local y times squash), rotated and
        centred at (cx, cy). Returns its tight pixel box (x0, y0, x1, y1), clipped to the image, or None."""
        c, s = math.cos(angle) * scale, math.sin(angle) * scale
        m = np.array([[c, s * squash], [-s, c * squash]], dtype=np.float32)  # applied as pts @ m
        placed = [
            (mat, kind, pts @ m + (cx, cy), t, max(1, round(w * scale))) for mat, kind, pts, t, w in parts
        ]
        every = np.concatenate([p[2] for p in placed])
        pad = max(p[4] for p in placed) / 2 + 2
        ox, oy = math.floor(every[:, 0].min() - pad), math.floor(every[:, 1].min() - pad)
        size = (math.ceil(every[:, 0].max() + pad) - ox + 1, math.ceil(every[:, 1].max() + pad) - oy + 1)
        # a tilted flat object is crossed on a longer path, so it attenuates more
        density = density * min(1.0 / max(squash, 1e-3), 2.0)
        box = None
        for material in sorted({p[0] for p in placed}):
            own = [p for p in placed if p[0] == material]
            top = max(p[3] for p in own)
            canvas = Image.new("L", size, 0)
            pen = ImageDraw.Draw(canvas)
            for _, kind, pts, t, w in own:
                xy = (pts - (ox, oy)).ravel().tolist()
                level = round(LEVELS * t / top)
                if kind == POLY:  # solid bodies show darker rims: rays graze along their walls
                    pen.polygon(xy, fill=level, outline=min(round(level * 1.25), 255))
                else:
                    pen.line(xy + xy[:2] if kind == LOOP else xy, fill=level, width=w, joint="curve")
            box = _union(box, self._add(canvas, material, ox, oy, top * density / LEVELS))
        return box

    def _add(self, canvas: Image.Image, material: int, ox: int, oy: int, unit: float):
        bbox = canvas.getbbox()
        if bbox is None:
            return None
        x0, y0 = max(ox + bbox[0], 0), max(oy + bbox[1], 0)
        x1, y1 = min(ox + bbox[2], self.width), min(oy + bbox[3], self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        pixels = np.asarray(canvas.crop((x0 - ox, y0 - oy, x1 - ox, y1 - oy)), dtype=np.float32)
        self.thickness[material, y0:y1, x0:x1] += pixels * unit
        return (x0, y0, x1, y1)

    def render(
        self, rng, noise: float = 0.12, *, tint=None, overflow: float | None = None, gain: float = 1.0
    ) -> Image.Image:
        """Colour image of the scene, with low-frequency density noise, slight blur and edge enhancement.
        `tint` (the belt's RGB) and `overflow` (dense metal in saturated blue) as physics.colourise; by
        default the empty belt is white. `gain` scales every attenuation (a scanner's exposure)."""
        low, high = attenuation(self.thickness)
        field = _low_frequency(rng, self.width, self.height, noise, gain)
        low *= field
        high *= field
        image = colourise(low, high, hue_shift=int(rng.integers(-3, 4)), overflow=overflow, tint=tint)
        return image.filter(ImageFilter.BoxBlur(0.6)).filter(ImageFilter.EDGE_ENHANCE)


def _union(a, b):
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _low_frequency(rng, width, height, amplitude, gain=1.0) -> np.ndarray:
    """Smooth multiplicative 'spots' around `gain`: a coarse random grid upsampled bilinearly."""
    grid = (gain * (1 + amplitude * rng.standard_normal((6, 6)))).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.BILINEAR))


# ---------------------------------------------------------------- one scan


def render_scan(rng, width: int, height: int, threats, difficulty: float = 0.5):
    """Render one to three bags with clutter, look-alikes and the given threats, on a tinted belt.

    threats: (class, box area as a fraction of the image) pairs, one per box to draw.
    Returns the RGB image and one (class, xmin, ymin, xmax, ymax) tight pixel box per threat.
    """
    scene = Scene(width, height)
    bags = _draw_bags(scene, rng)
    areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in bags], dtype=np.float64)
    share = areas / areas.sum()
    for _ in range(rng.poisson(3 + 10 * difficulty) + 2):
        _draw_clutter(scene, rng, bags[rng.choice(len(bags), p=share)])
    for _ in range(rng.poisson(0.5 + 2.5 * difficulty)):
        _draw_lookalike(scene, rng, bags[rng.choice(len(bags), p=share)])
    boxes = []
    for cls, area in threats:
        box = _draw_threat(scene, rng, bags[rng.choice(len(bags), p=share)], cls, area, difficulty)
        if box is not None:
            boxes.append((cls, *box))
            for _ in range(rng.poisson(0.8 * difficulty)):  # dense clutter piled on top of it
                _draw_clutter(scene, rng, box, dense=True)
    if rng.random() < STREAK_SHARE:
        _draw_streak(scene, rng)
    tint, overflow, gain = scanner(rng)
    image = scene.render(rng, noise=0.08 + 0.1 * difficulty, tint=tint, overflow=overflow, gain=gain)
    return image, boxes


STREAK_SHARE = 0.3
"""Share of scans with a noisy line across the belt near the top (the scan's start; a third of the real
dev scans show one)."""
OVERFLOW_SHARE = 0.35
"""Share of scans from a scanner that shows dense metal piles in saturated blue (physics.OVERFLOW_BLUE)."""


def scanner(rng):
    """Per-scan settings of the simulated machine: the belt's colour (real belts: median RGB 227,227,225,
    from near-white to light grey, some warm, some cyan), the overflow threshold (or None) and the
    exposure gain multiplying every attenuation (0.65-1.1: the real threats' boxes are light, a quarter of
    their pixels below HSV value 0.45)."""
    grey = rng.uniform(215, 252)
    warm = rng.normal(0, 4)
    tint = (min(255.0, grey + warm + 2), min(255.0, grey + rng.normal(0, 2)), min(255.0, grey - warm))
    overflow = float(rng.uniform(0.8, 1.3)) if rng.random() < OVERFLOW_SHARE else None
    gain = float(np.exp(rng.uniform(math.log(0.65), math.log(1.1))))
    return tint, overflow, gain


def _draw_streak(scene: Scene, rng):
    """A jagged, thin line of noise across the whole belt near the top edge."""
    y = rng.uniform(0.005, 0.08) * scene.height
    n = 40
    pts = np.stack([np.linspace(-0.5, 0.5, n), rng.normal(0, 0.002, n)], axis=1).astype(np.float32)
    streak = [
        shapes.part(shapes.ORGANIC, shapes.LINE, pts, rng.uniform(0.5, 1.5), width=rng.uniform(0.003, 0.008))
    ]
    scene.draw(streak, scene.width / 2, y, scene.width)


def _draw_bags(scene: Scene, rng) -> list[tuple[float, float, float, float]]:
    """Draw one bag (70%), two (22%) or three (8%) side by side along the belt's longer axis, each filling
    part of its slot and tilted a little, and return their pixel rectangles (x0, y0, x1, y1). The real dev
    scans' belt is empty over about half of each scan (bench/measure_real_threats.py)."""
    w, h = scene.width, scene.height
    n = 1 if rng.random() < 0.7 else (2 if rng.random() < 0.73 else 3)
    along_x = w >= h
    slot = (w / n, h) if along_x else (w, h / n)
    regions = []
    for i in range(n):
        fill = rng.uniform(0.45, 0.95, 2) if n == 1 else rng.uniform(0.55, 0.95, 2)
        bw, bh = slot[0] * fill[0], slot[1] * fill[1]
        ox, oy = (i * slot[0], 0.0) if along_x else (0.0, i * slot[1])
        x0 = ox + rng.uniform(0, slot[0] - bw)
        y0 = oy + rng.uniform(0, slot[1] - bh)
        maker = shapes.BAGS[rng.integers(len(shapes.BAGS))]
        angle = rng.normal(0, 0.12)
        scene.draw(maker(rng, bh / bw), x0 + bw / 2, y0 + bh / 2, bw, angle=angle)
        for _ in range(rng.integers(1, 4)):  # the packed clothes filling the bag
            scene.draw(
                shapes.packed_clothes(rng),
                x0 + bw * rng.uniform(0.35, 0.65),
                y0 + bh * rng.uniform(0.35, 0.65),
                max(bw, bh) * rng.uniform(0.5, 0.85),
                angle=rng.uniform(0, 2 * math.pi),
                squash=min(bw, bh) / max(bw, bh),
            )
        regions.append((x0, y0, x0 + bw, y0 + bh))
    return regions


def _draw_clutter(scene: Scene, rng, region, dense=False):
    """One everyday item (or, dense=True, a dense one to pile on a threat) centred inside `region`."""
    makers = _DENSE if dense else shapes.CLUTTER
    weights = np.array([m[1] for m in makers], dtype=np.float64)
    maker, _, (lo, hi) = makers[rng.choice(len(makers), p=weights / weights.sum())]
    long_side = max(region[2] - region[0], region[3] - region[1], 8)
    scene.draw(
        maker(rng),
        *_inside(rng, region, inset=0.0 if dense else 0.2),
        long_side * rng.uniform(lo, hi),
        angle=rng.uniform(0, 2 * math.pi),
        squash=rng.uniform(0.5, 1.0),
        density=rng.uniform(0.7, 1.3),
    )


_DENSE = tuple(
    m
    for m in shapes.CLUTTER
    if m[0] in (shapes.electronics, shapes.cable, shapes.keys, shapes.coins, shapes.bottle)
)


def _draw_lookalike(scene: Scene, rng, bag):
    maker = shapes.LOOKALIKES[rng.integers(len(shapes.LOOKALIKES))]
    long_side = max(bag[2] - bag[0], bag[3] - bag[1])
    scene.draw(
        maker(rng),
        *_inside(rng, bag),
        long_side * rng.uniform(0.12, 0.4),
        angle=rng.uniform(0, 2 * math.pi),
        squash=rng.uniform(0.6, 1.0),
        density=rng.uniform(0.7, 1.2),
    )


def _draw_threat(scene: Scene, rng, bag, cls, area, difficulty):
    """Draw one threat whose tight box covers `area` of the image, rotated, foreshortened, inside the bag."""
    parts = shapes.THREATS[cls](rng)
    if rng.random() < difficulty**2:
        angle = rng.uniform(0, 2 * math.pi)
    else:  # packers lay threats near the belt's axes, mostly along it (real boxes: median 9-28 degrees)
        angle = rng.choice(AXES, p=AXIS_SHARES) + rng.normal(0, 0.15)
    squash = math.cos(rng.uniform(0, 0.3 + 0.9 * difficulty))
    if rng.random() < 0.5:
        parts = [(m, k, p * (1, -1), t, w) for m, k, p, t, w in parts]  # mirror image
    box_w, box_h = _extent(parts, angle, squash)
    scale = math.sqrt(area * scene.width * scene.height / (box_w * box_h))
    scale = min(scale, 0.95 * scene.width / box_w, 0.95 * scene.height / box_h)
    half_w, half_h = box_w * scale / 2, box_h * scale / 2
    region = (bag[0] + half_w, bag[1] + half_h, bag[2] - half_w, bag[3] - half_h)
    if region[0] >= region[2] or region[1] >= region[3]:  # larger than the bag: anywhere in the frame
        region = (
            half_w,
            half_h,
            max(scene.width - half_w, half_w + 1),
            max(scene.height - half_h, half_h + 1),
        )
    cx, cy = rng.uniform(region[0], region[2]), rng.uniform(region[1], region[3])
    # spread wide (lognormal, x/÷ 1.3) so a class is told by its silhouette, not by how dark it is
    density = float(np.clip(np.exp(rng.normal(0, 0.25)), 0.55, 1.7)) * (1 - 0.3 * difficulty)
    return scene.draw(parts, cx, cy, scale, angle=angle, squash=squash, density=density)


AXES = np.array([0.0, 0.5, 1.0, 1.5]) * math.pi
AXIS_SHARES = (0.375, 0.125, 0.375, 0.125)
"""Threats laid along the belt (its long axis, x) three times as often as across it."""


def _extent(parts, angle, squash):
    """Width and height of the parts' vertices after rotation and foreshortening at unit scale."""
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, s * squash], [-s, c * squash]], dtype=np.float32)
    pts = np.concatenate([p[2] for p in parts]) @ m
    span = pts.max(axis=0) - pts.min(axis=0)
    return max(float(span[0]), 1e-3), max(float(span[1]), 1e-3)


def _inside(rng, region, inset=0.0):
    """A uniform point in the region shrunk by `inset` of its size per side (big items stay in the bag)."""
    dx, dy = (region[2] - region[0]) * inset, (region[3] - region[1]) * inset
    return rng.uniform(region[0] + dx, region[2] - dx), rng.uniform(region[1] + dy, region[3] - dy)
