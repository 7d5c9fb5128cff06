"""Parametric objects for the synthetic scans: threats, everyday clutter, metal look-alikes, bags.

Each maker takes a numpy Generator and returns a list of `part`s in local units, long axis about
x in [-0.5, 0.5]; `pipeline.xray.render.Scene.draw` scales, rotates and foreshortens them. Thickness is in
the physics' units: about 0.3 is a sheet of cloth, 1-2 a full bottle, 2-3 a steel tool (teal, darker where
parts overlap). Sub-types (pistol or revolver, kitchen, combat, dagger or folding knife, ...) are drawn per
object.

The threats follow what the real scans show (issue 12; crops of every class in the contact sheet of
bench/bench_realism.py): pistols with a slide, the denser barrel inside it, a raked grip holding the
magazine, trigger guard and hammer, height about 0.65 of the length (real gun boxes' median aspect 1.5);
revolvers with a cylinder whose chambers show as bars and a wooden or steel grip; knives whose thin blades
read teal to green (real knife boxes' median hue 90-95 degrees, the lightest class) with a darker spine,
dense guard and tang, and a wood or plastic handle; combination and adjustable wrenches; pliers with bowed
handles, often bare steel (real pliers are the darkest class: 42% of their box pixels below HSV value
0.45); scissors with large finger rings and short blades (real boxes' median aspect 1.3).
Strokes are wide enough to survive the 128-pixel inputs of the demo's model (a pliers handle, a wrench's
ring, a scissors ring: about 0.06 of the tool's length), knife blades thin (steel 0.35-0.8 units, so
they stay light; the real knife boxes have 13% of their pixels dark, ours 10-27% over draws of 30-60
boxes), guns a little lighter than the tools (the real gun boxes read HSV value 0.73, the tools'
0.51-0.57).
"""

import math

import numpy as np

ORGANIC, INORGANIC, METAL = 0, 1, 2
"""Indices of the per-material thickness maps."""
POLY, LINE, LOOP = 0, 1, 2
"""Part kinds: filled polygon, open polyline, closed polyline."""

# ---------------------------------------------------------------- geometry helpers (local units)


def rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def ellipse(cx, cy, rx, ry, n=18, start=0.0, stop=2 * math.pi) -> np.ndarray:
    a = np.linspace(start, stop, n, dtype=np.float32)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def blob(rng, n=10, roughness=0.25) -> np.ndarray:
    """A random star-shaped polygon of radius about 0.5 (clothes, bags, pouches)."""
    a = np.sort(rng.uniform(0, 2 * math.pi, n)).astype(np.float32)
    r = 0.5 * (1 + roughness * rng.uniform(-1, 1, n)).astype(np.float32)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def wiggle(rng, n=8, spread=0.15) -> np.ndarray:
    """A smooth random polyline from x=-0.5 to 0.5 (cables, straps)."""
    x = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    y = np.cumsum(rng.normal(0, spread, n)).astype(np.float32)
    return np.stack([x, y - y.mean()], axis=1)


def part(material, kind, points, thickness, width=0.0):
    """One drawable piece of an object: a filled polygon, an open polyline or a closed loop."""
    return (material, kind, np.asarray(points, dtype=np.float32), thickness, width)


# ---------------------------------------------------------------- threats


def gun(rng):
    return _revolver(rng) if rng.random() < 0.35 else _pistol(rng)


def _pistol(rng):
    """Side view, muzzle at +x: steel slide with the denser barrel inside it, a frame (steel, or polymer that
    reads green), a raked grip holding a steel magazine, trigger guard, trigger and hammer. Height about
    0.65 of the length (the real gun boxes' median aspect is 1.5)."""
    t = rng.uniform(1.1, 2.0)
    top, h = -0.27, rng.uniform(0.13, 0.18)
    below = top + h
    rake = rng.uniform(0.06, 0.16)
    grip_len = rng.uniform(0.42, 0.55)
    g0, g1 = -0.47, rng.uniform(-0.26, -0.18)
    polymer = rng.random() < 0.45
    frame, ft = (INORGANIC, t * 1.3) if polymer else (METAL, t * 0.8)
    return [
        part(METAL, POLY, [(-0.5, top), (0.47, top), (0.5, top + 0.03), (0.5, below), (-0.5, below)], t),
        part(METAL, POLY, rect(-0.12, top + 0.035, 0.5, top + 0.035 + 0.5 * h), t * 1.3),
        part(frame, POLY, [(-0.48, below), (0.3, below), (0.3, below + 0.06), (-0.2, below + 0.07)], ft),
        part(
            frame,
            POLY,
            [(g0, below), (g1, below), (g1 - rake, below + grip_len), (g0 - rake, below + grip_len - 0.03)],
            ft,
        ),
        part(
            METAL,
            POLY,
            [
                (g0 + 0.05, below + 0.05),
                (g1 - 0.04, below + 0.05),
                (g1 - 0.04 - rake * 0.9, below + grip_len - 0.02),
                (g0 + 0.05 - rake * 0.9, below + grip_len - 0.04),
            ],
            t * 1.1,
        ),
        part(
            frame,
            LINE,
            ellipse(-0.04, below + 0.05, 0.14, 0.13, n=10, start=0, stop=math.pi),
            ft * 0.8,
            width=0.03,
        ),
        part(
            METAL,
            LINE,
            [(-0.08, below + 0.06), (-0.07, below + 0.12), (-0.1, below + 0.16)],
            t * 0.8,
            width=0.02,
        ),
        part(
            METAL, POLY, [(-0.5, top + 0.02), (-0.56, top - 0.04), (-0.5, top - 0.05), (-0.44, top)], t * 0.8
        ),
    ]


def _revolver(rng):
    """Side view: barrel with the ejector rod under it, a cylinder whose chambers show as parallel bars, the
    frame and top strap, hammer, trigger guard, and a curved grip of wood (orange) or steel."""
    t = rng.uniform(1.1, 2.0)
    muzzle = rng.uniform(0.35, 0.5)
    wood = rng.random() < 0.5
    parts = [
        part(METAL, POLY, rect(0.0, -0.2, muzzle, -0.11), t),
        part(METAL, POLY, rect(0.0, -0.11, muzzle * 0.6, -0.07), t * 0.6),
        part(METAL, POLY, ellipse(-0.12, -0.1, 0.14, 0.12, n=16), t * 0.9),
        part(METAL, POLY, rect(-0.32, -0.24, 0.04, -0.2), t * 0.8),
        part(METAL, POLY, rect(-0.32, -0.2, -0.24, 0.0), t),
        part(METAL, POLY, [(-0.3, -0.24), (-0.42, -0.33), (-0.44, -0.29), (-0.34, -0.2)], t * 0.9),
        part(METAL, LINE, ellipse(-0.1, 0.02, 0.1, 0.11, n=10, start=0, stop=math.pi), t * 0.7, width=0.03),
        part(
            ORGANIC if wood else METAL,
            POLY,
            [(-0.32, -0.02), (-0.18, 0.0), (-0.22, 0.18), (-0.3, 0.38), (-0.48, 0.36), (-0.46, 0.12)],
            2.6 if wood else t * 0.9,
        ),
    ]
    parts += [part(METAL, POLY, rect(-0.24, y, 0.0, y + 0.035), t * 0.5) for y in (-0.19, -0.12, -0.05)]
    return parts


def knife(rng):
    """Kitchen, combat, dagger or folding knife. Blades are thin steel over a ground bevel, so they read
    teal to green rather than dark blue (the real knife boxes' median hue is 90-95 degrees); a darker spine,
    a dense guard and tang, and a handle of wood or plastic (orange or green) with rivets."""
    kind = rng.choice(["kitchen", "combat", "dagger", "folding"], p=[0.35, 0.3, 0.15, 0.2])
    tb = rng.uniform(0.35, 0.8)
    bevel = rng.uniform(0.3, 0.6)
    w = rng.uniform(0.13, 0.22) if kind == "kitchen" else rng.uniform(0.1, 0.17)
    base = rng.uniform(-0.12, 0.02) if kind != "folding" else rng.uniform(0.0, 0.1)
    if kind == "dagger":
        blade = [(base, -w / 2), (0.5, 0.0), (base, w / 2)]
        spine = [(base, 0.0), (0.45, 0.0)]
    elif kind == "combat":
        blade = [(base, -w / 2), (0.3, -w / 2), (0.42, -w * 0.2), (0.5, 0.0), (0.35, w / 2), (base, w / 2)]
        spine = [(base, -w / 2), (0.3, -w / 2), (0.42, -w * 0.2)]
    else:
        blade = [(base, -w / 2), (0.32, -w / 2), (0.5, -w * 0.42), (0.4, w * 0.15), (base, w / 2)]
        spine = [(base, -w / 2), (0.32, -w / 2), (0.5, -w * 0.42)]
    parts = [
        part(METAL, POLY, blade, tb),
        part(INORGANIC, POLY, blade, bevel),
        part(METAL, LINE, spine, tb * 0.9, width=0.018),
    ]
    hw = rng.uniform(0.06, 0.09)
    grip = ORGANIC if rng.random() < 0.55 else INORGANIC
    gt = rng.uniform(1.6, 2.6) if grip == ORGANIC else rng.uniform(1.2, 2.0)
    if kind in ("combat", "dagger"):
        parts.append(part(METAL, POLY, rect(base - 0.035, -w * 0.85, base, w * 0.85), rng.uniform(1.4, 2.2)))
        parts.append(part(METAL, POLY, rect(-0.5, -hw * 1.1, -0.46, hw * 1.1), rng.uniform(1.2, 2.0)))
    if kind == "folding":
        parts.append(part(METAL, POLY, rect(-0.5, -hw, base, hw), rng.uniform(0.8, 1.4)))
        parts.append(part(METAL, POLY, ellipse(base - 0.02, 0.0, 0.025, 0.025, n=8), 2.5))
    parts.append(part(grip, POLY, rect(-0.48, -hw, base - 0.035, hw), gt))
    parts.append(part(METAL, POLY, rect(-0.46, -hw * 0.35, base, hw * 0.35), rng.uniform(0.6, 1.2)))
    if kind == "kitchen":
        parts += [part(METAL, POLY, ellipse(x, 0.0, 0.014, 0.014, n=8), 2.0) for x in (-0.4, -0.28, -0.16)]
    return parts


def wrench(rng):
    """Combination wrench (an open jaw at one end, a ring at the other) or adjustable wrench (fixed and
    sliding jaws, the dense worm gear, a hang hole)."""
    t = rng.uniform(1.8, 2.8)
    if rng.random() < 0.35:  # adjustable
        return [
            part(METAL, POLY, [(-0.5, -0.045), (0.22, -0.055), (0.22, 0.055), (-0.5, 0.04)], t),
            part(METAL, LOOP, ellipse(-0.44, 0.0, 0.022, 0.022, n=8), t * 0.5, width=0.01),
            part(
                METAL,
                POLY,
                [(0.18, -0.15), (0.5, -0.13), (0.5, -0.05), (0.33, -0.035), (0.33, 0.07), (0.18, 0.11)],
                t * 1.2,
            ),
            part(METAL, POLY, rect(0.33, 0.02, 0.48, 0.08), t),
            part(METAL, POLY, ellipse(0.24, 0.03, 0.035, 0.05, n=8), t * 1.4),
        ]
    ring = rng.uniform(0.1, 0.14)
    jaw = rng.uniform(0.12, 0.16)
    return [
        part(
            METAL,
            POLY,
            [(-0.38, -0.05), (0.0, -0.04), (0.36, -0.052), (0.36, 0.052), (0.0, 0.04), (-0.38, 0.05)],
            t,
        ),
        part(METAL, LOOP, ellipse(-0.42, 0.0, ring, ring, n=14), t * 1.2, width=0.055),
        part(
            METAL,
            LINE,
            ellipse(0.42, 0.0, jaw, jaw, n=12, start=0.75, stop=2 * math.pi - 0.75),
            t * 1.2,
            width=0.05,
        ),
    ]


def pliers(rng):
    """Two bowed handles diverging from the pivot, most of their length in plastic sleeves (orange or
    green), and the dense jaws (long-nose or combination) beyond the pivot."""
    t = rng.uniform(2.6, 3.6)
    spread = rng.uniform(0.12, 0.32)
    nose = rng.uniform(0.3, 0.5)
    bow = rng.uniform(-0.05, 0.05)
    sleeve = ORGANIC if rng.random() < 0.35 else INORGANIC  # real pliers' boxes read green (hue 136)
    sleeved = rng.random() < 0.4
    jaw = rng.uniform(0.035, 0.06)
    parts = [
        part(METAL, POLY, [(0.05, -jaw * 1.4), (nose, -0.012), (nose, 0.012), (0.05, jaw * 1.4)], t * 1.2),
        part(METAL, POLY, ellipse(0.06, 0.0, 0.06, 0.06, n=10), t * 1.5),
    ]
    for sign in (-1, 1):
        handle = np.array(
            [
                (0.05, 0.02 * sign),
                (-0.15, (0.03 + spread * 0.35 + bow) * sign),
                (-0.35, (0.02 + spread * 0.75 + bow) * sign),
                (-0.5, (spread + 0.01) * sign),
            ],
            dtype=np.float32,
        )
        parts.append(part(METAL, LINE, handle, t * 0.9, width=0.06))
        if sleeved:
            parts.append(part(sleeve, LINE, handle[1:], rng.uniform(1.8, 2.8), width=0.085))
    return parts


def scissors(rng):
    """Two finger rings (plastic or steel), the shanks, a dense pivot screw and two long, slightly open
    blades."""
    t = rng.uniform(2.4, 3.4)
    open_ = rng.uniform(0.0, 0.18)
    ring = ORGANIC if rng.random() < 0.2 else (INORGANIC if rng.random() < 0.3 else METAL)
    rt = {ORGANIC: rng.uniform(2.0, 3.0), INORGANIC: rng.uniform(1.6, 2.6), METAL: t}[ring]
    rx, ry = rng.uniform(0.14, 0.2), rng.uniform(0.12, 0.18)
    parts = [part(METAL, POLY, ellipse(0.0, 0.0, 0.03, 0.03, n=8), t * 2)]
    for sign in (-1, 1):
        parts += [
            part(
                METAL,
                POLY,
                [
                    (-0.04, 0.015 * sign),
                    (0.5, (open_ + 0.01) * sign),
                    (0.48, (open_ + 0.045) * sign),
                    (0.02, 0.07 * sign),
                ],
                t,
            ),
            part(ring, LOOP, ellipse(-0.32, (ry + 0.02) * sign, rx, ry, n=16), rt, width=0.055),
            part(METAL, LINE, [(0.0, 0.0), (-0.16, (ry * 0.6 + 0.02) * sign)], t, width=0.04),
        ]
    return parts


def hammer(rng):
    t = rng.uniform(3.0, 4.5)
    handle = ORGANIC if rng.random() < 0.6 else METAL
    parts = [
        part(handle, POLY, rect(-0.5, -0.04, 0.32, 0.04), 2.5 if handle == ORGANIC else t * 0.8),
        part(METAL, POLY, rect(0.28, -0.28, 0.44, 0.12), t),
    ]
    if rng.random() < 0.5:  # claw
        parts.append(
            part(METAL, POLY, [(0.28, 0.12), (0.44, 0.12), (0.4, 0.3), (0.3, 0.4), (0.32, 0.25)], t * 0.8)
        )
    return parts


THREATS = {
    "gun": gun,
    "knife": knife,
    "wrench": wrench,
    "pliers": pliers,
    "scissors": scissors,
    "hammer": hammer,
}

# ---------------------------------------------------------------- look-alikes (metal, not threats)


def screwdriver(rng):
    return [
        part(METAL, POLY, rect(-0.1, -0.015, 0.5, 0.015), rng.uniform(2, 3)),
        part(ORGANIC, POLY, rect(-0.5, -0.05, -0.1, 0.05), 2.5),
    ]


def cutlery(rng):
    t = rng.uniform(1.5, 2.5)
    handle = part(METAL, POLY, [(-0.5, -0.03), (0.1, -0.018), (0.1, 0.018), (-0.5, 0.03)], t)
    head = rng.integers(3)
    if head == 0:  # table knife: the nearest look-alike
        return [handle, part(METAL, POLY, [(0.1, -0.04), (0.48, -0.03), (0.5, 0.0), (0.1, 0.03)], t * 0.8)]
    if head == 1:  # spoon
        return [handle, part(METAL, POLY, ellipse(0.3, 0.0, 0.2, 0.08), t * 0.8)]
    tines = [part(METAL, LINE, [(0.18, y), (0.5, y)], t, width=0.015) for y in (-0.045, -0.015, 0.015, 0.045)]
    return [handle, part(METAL, POLY, rect(0.1, -0.055, 0.2, 0.055), t)] + tines


def ruler(rng):
    t = rng.uniform(1.0, 2.0)
    marks = [
        part(METAL, LINE, [(x, -0.05), (x, -0.03)], t * 0.5, width=0.006) for x in (-0.4, -0.2, 0.0, 0.2, 0.4)
    ]
    return [part(METAL, POLY, rect(-0.5, -0.05, 0.5, 0.05), t)] + marks


def tool(rng):
    """Hex key, tweezers, clippers or a padlock: small dense hand-tool-like shapes."""
    t = rng.uniform(2.5, 4.0)
    kind = rng.integers(4)
    if kind == 0:
        return [part(METAL, LINE, [(-0.5, 0.25), (-0.5, 0.0), (0.5, 0.0)], t, width=0.06)]
    if kind == 1:
        return [part(METAL, LINE, [(0.5, -0.1), (-0.5, 0.0), (0.5, 0.1)], t, width=0.05)]
    if kind == 2:
        return [
            part(METAL, POLY, rect(-0.3, -0.15, 0.3, 0.35), t),
            part(METAL, LINE, ellipse(0.0, -0.15, 0.2, 0.3, n=10, start=math.pi, stop=2 * math.pi), t, 0.07),
        ]
    return [
        part(METAL, POLY, rect(-0.5, -0.08, 0.5, 0.08), t * 0.7),
        part(METAL, POLY, rect(0.3, -0.15, 0.5, 0.15), t),
    ]


LOOKALIKES = (screwdriver, cutlery, ruler, tool)

# ---------------------------------------------------------------- everyday clutter


def clothes(rng):
    folds = [
        part(ORGANIC, LINE, wiggle(rng, 5, 0.1) * 0.8, rng.uniform(0.2, 0.4), width=0.02) for _ in range(3)
    ]
    return [part(ORGANIC, POLY, blob(rng, 12, 0.3), rng.uniform(0.1, 0.35))] + folds


def packed_clothes(rng):
    """A stack of folded clothes filling much of a bag: a broad translucent layer, cotton (beige-orange) or
    with synthetic fibres and prints (olive to light green, as much of the real bags' fill reads), crossed
    by fold and seam lines."""
    t = rng.uniform(0.15, 0.45)
    synthetic = rng.uniform(0.2, 1.2) if rng.random() < 0.6 else 0.0
    shape = blob(rng, 12, 0.2)
    parts = [part(ORGANIC, POLY, shape, t)]
    if synthetic:
        parts.append(part(INORGANIC, POLY, shape, t * synthetic))
    parts += [
        part(
            ORGANIC,
            LINE,
            wiggle(rng, 6, 0.08) * rng.uniform(0.5, 0.9),
            t * rng.uniform(0.6, 1.2),
            width=0.015,
        )
        for _ in range(rng.integers(3, 8))
    ]
    return parts


def bottle(rng):
    liquid = rng.uniform(1.0, 2.6)
    glass = rng.random() < 0.3
    return [
        part(INORGANIC if glass else ORGANIC, POLY, rect(-0.5, -0.16, 0.25, 0.16), liquid),
        part(INORGANIC if glass else ORGANIC, POLY, rect(0.25, -0.06, 0.45, 0.06), liquid * 0.5),
        part(INORGANIC, POLY, rect(0.43, -0.07, 0.5, 0.07), 0.8),
    ]


def electronics(rng):
    """A device: a green board or plastic case crossed by thin metal traces, a battery or shield plate,
    and small dense components (the real bags' chargers, phones, power banks, laptops)."""
    t = rng.uniform(0.6, 1.4)
    parts = [
        part(INORGANIC, POLY, rect(-0.5, -0.33, 0.5, 0.33), t),
        part(INORGANIC, LOOP, rect(-0.49, -0.32, 0.49, 0.32), t * 0.8, width=0.02),
        part(METAL, POLY, rect(-0.4, 0.05, rng.uniform(-0.1, 0.2), 0.28), rng.uniform(0.6, 1.4)),
    ]
    for _ in range(rng.integers(3, 9)):
        y = rng.uniform(-0.3, 0.3)
        x0 = rng.uniform(-0.48, 0.2)
        parts.append(
            part(
                METAL,
                LINE,
                [(x0, y), (x0 + rng.uniform(0.1, 0.4), y + rng.normal(0, 0.05))],
                rng.uniform(0.5, 1.2),
                width=0.012,
            )
        )
    for _ in range(rng.integers(3, 10)):
        x, y = rng.uniform(-0.45, 0.35), rng.uniform(-0.3, 0.2)
        parts.append(
            part(
                METAL,
                POLY,
                rect(x, y, x + rng.uniform(0.03, 0.1), y + rng.uniform(0.02, 0.08)),
                rng.uniform(1, 3),
            )
        )
    return parts


def wires(rng):
    """A tangle of earphone, charger and USB cables: several long thin curling lines, dark green to teal
    in the real scans (copper in plastic), with a dense plug or two."""
    parts = []
    for _ in range(rng.integers(2, 6)):
        n = int(rng.integers(12, 24))
        heading = np.cumsum(rng.normal(0, 0.5, n)) + rng.uniform(0, 2 * math.pi)  # smooth curls
        path = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1), axis=0).astype(np.float32)
        path -= path.mean(axis=0)
        path /= max(float(np.abs(path).max()) * 2, 1e-3)
        material = METAL if rng.random() < 0.5 else INORGANIC
        parts.append(part(material, LINE, path, rng.uniform(1.2, 2.5), width=rng.uniform(0.006, 0.014)))
        if rng.random() < 0.5:
            x, y = path[-1]
            parts.append(
                part(METAL, POLY, rect(x - 0.025, y - 0.015, x + 0.025, y + 0.015), rng.uniform(1.5, 3))
            )
    return parts


def trinkets(rng):
    """Small dense bits spread over an area: zipper pulls, buckles, rings, screws, clips, batteries (the
    teal specks scattered over every real bag)."""
    parts = []
    for _ in range(rng.integers(3, 11)):
        x, y = rng.uniform(-0.48, 0.48, 2)
        r = rng.uniform(0.012, 0.035)
        kind = rng.integers(4)
        t = rng.uniform(1.2, 3.0)
        material = METAL if rng.random() < 0.75 else INORGANIC
        if kind == 0:
            parts.append(
                part(material, LOOP, ellipse(x, y, r, r * rng.uniform(0.6, 1), n=10), t, width=r * 0.4)
            )
        elif kind == 1:
            parts.append(part(material, POLY, rect(x - r, y - r * 0.4, x + r, y + r * 0.4), t))
        elif kind == 2:
            parts.append(
                part(material, LOOP, rect(x - r, y - r * 0.7, x + r, y + r * 0.7), t, width=r * 0.35)
            )
        else:
            a = rng.uniform(0, math.pi)
            dx, dy = 2 * r * math.cos(a), 2 * r * math.sin(a)
            parts.append(part(material, LINE, [(x - dx, y - dy), (x + dx, y + dy)], t, width=r * 0.6))
    return parts


def cable(rng):
    material = INORGANIC if rng.random() < 0.6 else METAL
    t = rng.uniform(0.8, 2.0)
    if rng.random() < 0.4:  # a coil: loops of wire
        return [
            part(
                material,
                LOOP,
                ellipse(rng.normal(0, 0.03), rng.normal(0, 0.03), 0.45, rng.uniform(0.3, 0.45), n=20),
                t,
                width=0.012,
            )
            for _ in range(rng.integers(3, 9))
        ]
    return [
        part(material, LINE, wiggle(rng, 9, 0.12), t, width=0.012),
        part(INORGANIC, POLY, rect(0.45, -0.03, 0.55, 0.03), 1.2),
    ]


def keys(rng):
    t = rng.uniform(2.0, 3.0)
    parts = [part(METAL, LOOP, ellipse(0.0, 0.0, 0.12, 0.12, n=12), t, width=0.02)]
    for _ in range(rng.integers(1, 4)):
        a = rng.uniform(0, 2 * math.pi)
        ca, sa = math.cos(a), math.sin(a)
        parts.append(part(METAL, LINE, [(0.12 * ca, 0.12 * sa), (0.5 * ca, 0.5 * sa)], t, width=0.06))
    return parts


def coins(rng):
    return [
        part(
            METAL,
            POLY,
            ellipse(rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), 0.1, 0.1, n=12),
            rng.uniform(1.0, 2.0),
        )
        for _ in range(rng.integers(1, 6))
    ]


def umbrella(rng):
    parts = [
        part(ORGANIC, POLY, [(-0.45, -0.1), (0.45, -0.04), (0.45, 0.04), (-0.45, 0.1)], 0.6),
        part(METAL, LINE, [(-0.5, 0.0), (0.5, 0.0)], 2.0, width=0.015),
    ]
    parts += [
        part(METAL, LINE, [(-0.4, y), (0.4, y * 0.4)], 1.2, width=0.006) for y in (-0.07, -0.03, 0.03, 0.07)
    ]
    return parts + [
        part(ORGANIC, LINE, ellipse(-0.5, 0.06, 0.06, 0.06, n=8, start=0, stop=math.pi), 1.5, 0.03)
    ]


def book(rng):
    return [part(ORGANIC, POLY, rect(-0.5, -0.35, 0.5, 0.35), rng.uniform(0.9, 1.8))]


def shoe(rng):
    return [
        part(ORGANIC, POLY, ellipse(0.0, 0.0, 0.5, 0.2), rng.uniform(0.8, 1.5)),
        part(INORGANIC, LOOP, ellipse(0.0, 0.0, 0.5, 0.2), 1.0, width=0.04),
    ]


def pouch(rng):
    """Toiletry bag: a cloth pouch with a zipper and a few small containers."""
    parts = [
        part(ORGANIC, POLY, blob(rng, 8, 0.15), 0.4),
        part(METAL, LINE, [(-0.4, -0.3), (0.4, -0.3)], 1.5, width=0.02),
    ]
    for _ in range(rng.integers(1, 4)):
        x, y = rng.uniform(-0.3, 0.2), rng.uniform(-0.2, 0.2)
        parts.append(part(ORGANIC, POLY, rect(x, y, x + 0.15, y + 0.08), rng.uniform(0.8, 2.0)))
    return parts


CLUTTER = (  # (maker, relative frequency, size as a fraction of the bag's long side)
    (clothes, 5, (0.3, 0.7)),
    (bottle, 1.5, (0.15, 0.35)),
    (electronics, 3, (0.15, 0.4)),
    (cable, 2, (0.15, 0.5)),
    (wires, 3, (0.2, 0.6)),
    (trinkets, 3, (0.3, 0.9)),
    (keys, 1, (0.05, 0.12)),
    (coins, 1, (0.06, 0.15)),
    (umbrella, 1, (0.35, 0.7)),
    (book, 1, (0.15, 0.35)),
    (shoe, 1, (0.2, 0.35)),
    (pouch, 1, (0.15, 0.3)),
)

# ---------------------------------------------------------------- bags (drawn first, under everything)


def suitcase(rng, aspect):
    """Hard case: shell, aluminium frame rim, two telescopic handle bars, wheels, a carry handle."""
    h = 0.5 * aspect
    bar = rng.uniform(0.18, 0.32) * aspect
    parts = [
        part(ORGANIC, POLY, rect(-0.5, -h, 0.5, h), rng.uniform(0.08, 0.2)),
        part(INORGANIC, LOOP, rect(-0.49, -h * 0.98, 0.49, h * 0.98), 1.2, width=0.02),
        part(INORGANIC, POLY, rect(-0.47, -bar - 0.02, 0.4, -bar + 0.02), rng.uniform(1.0, 2.0)),
        part(INORGANIC, POLY, rect(-0.47, bar - 0.02, 0.4, bar + 0.02), rng.uniform(1.0, 2.0)),
        part(
            ORGANIC,
            LINE,
            ellipse(0.0, -h, 0.12, 0.05, n=10, start=math.pi, stop=2 * math.pi),
            2.0,
            width=0.03,
        ),
    ]
    parts += [part(METAL, POLY, ellipse(-0.47, y, 0.03, 0.03, n=10), 3.0) for y in (-h * 0.9, h * 0.9)]
    return parts + _zipper(rect(-0.5, -h, 0.5, h), rng)


def softbag(rng, aspect):
    """Backpack or holdall: a fabric blob with straps, buckles and zippers."""
    shape = blob(rng, 14, 0.12)
    shape[:, 1] *= aspect
    parts = [
        part(ORGANIC, POLY, shape, rng.uniform(0.08, 0.2)),
        part(ORGANIC, LOOP, shape * 0.97, 0.8, width=0.015),
    ]
    for _ in range(2):
        strap = wiggle(rng, 6, 0.04)
        strap[:, 1] += rng.uniform(-0.3, 0.3) * aspect
        parts += [
            part(ORGANIC, LINE, strap, 0.9, width=0.04),
            part(INORGANIC, POLY, rect(-0.04, -0.03, 0.04, 0.03) + strap[2], 1.5),
        ]
    return parts + _zipper(rect(-0.4, -0.4 * aspect, 0.4, -0.35 * aspect), rng)


def _zipper(outline, rng):
    """A zipper: a dotted metal line along the top edge and a dense slider."""
    (x0, y0), (x1, _) = outline[0], outline[1]
    xs = np.linspace(x0, x1, 61, dtype=np.float32)
    teeth = part(
        METAL, LINE, np.stack([xs, y0 + 0.006 * (np.arange(61) % 2 - 0.5)], axis=1), 1.5, width=0.006
    )
    slider = x0 + (x1 - x0) * rng.uniform(0.1, 0.9)
    return [teeth, part(METAL, POLY, rect(slider, y0 - 0.015, slider + 0.03, y0 + 0.015), 3.0)]


BAGS = (suitcase, softbag)
