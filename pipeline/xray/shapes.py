"""Parametric objects for the synthetic scans: threats, everyday clutter, metal look-alikes, bags.

Each maker takes a numpy Generator and returns a list of `part`s in local units, long axis about
x in [-0.5, 0.5]; `pipeline.xray.render.Scene.draw` scales, rotates and foreshortens them. Thickness is in
the physics' units: about 0.3 is a sheet of cloth, 1-2 a full bottle, 2-4 a steel tool (dark blue).
Sub-types (pistol or revolver, kitchen or folding knife, ...) are drawn per object.
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
    t = rng.uniform(2.2, 3.5)
    grip_back = rng.uniform(0.02, 0.12)
    frame = METAL if rng.random() < 0.6 else INORGANIC  # polymer frames read green under a metal slide
    return [
        part(METAL, POLY, rect(-0.5, -0.2, 0.5, -0.04), t),
        part(
            frame,
            POLY,
            [(-0.46, -0.05), (-0.18, -0.05), (-0.26 + grip_back, 0.5), (-0.5 + grip_back, 0.46)],
            t * 0.8,
        ),
        part(
            METAL,
            POLY,
            [(-0.4, 0.0), (-0.26, 0.0), (-0.3 + grip_back, 0.42), (-0.44 + grip_back, 0.4)],
            t * 1.2,
        ),
        part(
            frame, LOOP, ellipse(-0.06, 0.06, 0.11, 0.09, n=12, start=0, stop=math.pi), t * 0.6, width=0.025
        ),
        part(METAL, POLY, rect(-0.18, -0.05, 0.3, 0.02), t * 0.7),
    ]


def _revolver(rng):
    t = rng.uniform(2.5, 3.8)
    barrel = rng.uniform(0.25, 0.5)
    return [
        part(METAL, POLY, rect(-0.05, -0.16, barrel, -0.07), t),
        part(METAL, POLY, ellipse(-0.12, -0.08, 0.13, 0.1), t * 1.4),
        part(METAL, POLY, rect(-0.3, -0.18, 0.02, -0.02), t * 0.8),
        part(
            ORGANIC if rng.random() < 0.5 else METAL,
            POLY,
            [(-0.34, -0.04), (-0.16, -0.02), (-0.3, 0.42), (-0.5, 0.38)],
            t * 0.9,
        ),
        part(METAL, LOOP, ellipse(-0.1, 0.04, 0.09, 0.08, n=10, start=0, stop=math.pi), t * 0.6, width=0.025),
    ]


def knife(rng):
    kind = rng.choice(["kitchen", "folding", "dagger"])
    t = rng.uniform(1.4, 2.6)
    width = rng.uniform(0.07, 0.16)
    if kind == "dagger":
        blade = [(-0.1, -width / 2), (0.5, 0.0), (-0.1, width / 2)]
        return [
            part(METAL, POLY, blade, t),
            part(METAL, POLY, rect(-0.13, -width, -0.09, width), t * 1.4),
            part(ORGANIC, POLY, rect(-0.5, -0.035, -0.13, 0.035), 2.0),
            part(METAL, POLY, rect(-0.5, -0.012, -0.13, 0.012), t * 0.8),
        ]
    blade = [
        (-0.1, -width / 2),
        (0.3, -width / 2),
        (0.5, -width / 2 + 0.01),
        (0.38, width * 0.2),
        (-0.1, width / 2),
    ]
    handle = ORGANIC if kind == "kitchen" else METAL
    parts = [
        part(METAL, POLY, blade, t),
        part(handle, POLY, rect(-0.5, -0.05, -0.08, 0.05), 2.2 if handle == ORGANIC else t * 1.3),
    ]
    if kind == "kitchen":  # rivets through the handle
        parts += [part(METAL, POLY, ellipse(x, 0.0, 0.015, 0.015, n=8), t * 2) for x in (-0.4, -0.25)]
    return parts


def wrench(rng):
    t = rng.uniform(2.4, 3.6)
    if rng.random() < 0.4:  # adjustable
        return [
            part(METAL, POLY, [(-0.5, -0.04), (0.25, -0.05), (0.25, 0.05), (-0.5, 0.035)], t),
            part(
                METAL,
                POLY,
                [(0.2, -0.14), (0.5, -0.12), (0.5, -0.04), (0.32, -0.03), (0.32, 0.06), (0.2, 0.1)],
                t * 1.3,
            ),
            part(METAL, POLY, ellipse(0.22, 0.02, 0.035, 0.06, n=8), t * 1.6),
            part(METAL, LOOP, ellipse(-0.45, 0.0, 0.02, 0.02, n=8), t * 0.5, width=0.01),
        ]
    jaw = rng.uniform(0.06, 0.1)
    return [
        part(METAL, POLY, rect(-0.36, -0.035, 0.36, 0.035), t),
        part(METAL, LOOP, ellipse(0.42, 0.0, 0.075, 0.075, n=14), t * 1.2, width=0.045),
        part(
            METAL,
            POLY,
            [
                (-0.36, -0.05),
                (-0.5, -jaw - 0.03),
                (-0.52, -jaw + 0.01),
                (-0.42, -jaw * 0.5),
                (-0.42, jaw * 0.5),
                (-0.52, jaw - 0.01),
                (-0.5, jaw + 0.03),
                (-0.36, 0.05),
            ],
            t * 1.2,
        ),
    ]


def pliers(rng):
    t = rng.uniform(2.4, 3.6)
    spread = rng.uniform(0.06, 0.2)
    nose = rng.uniform(0.25, 0.5)  # long-nose pliers have longer, thinner jaws
    sleeve = ORGANIC if rng.random() < 0.7 else INORGANIC
    parts = [part(METAL, POLY, ellipse(0.0, 0.0, 0.05, 0.05, n=10), t * 1.5)]
    for sign in (-1, 1):
        parts += [
            part(
                METAL,
                POLY,
                [
                    (0.0, -0.03 * sign),
                    (-0.5, spread * sign),
                    (-0.5, (spread + 0.05) * sign),
                    (0.0, 0.04 * sign),
                ],
                t * 0.9,
            ),
            part(
                sleeve,
                POLY,
                [
                    (-0.15, 0.02 * sign),
                    (-0.5, spread * sign),
                    (-0.5, (spread + 0.06) * sign),
                    (-0.15, 0.08 * sign),
                ],
                2.5,
            ),
            part(
                METAL,
                POLY,
                [(0.0, 0.04 * sign), (nose, 0.005 * sign), (nose, 0.02 * sign), (0.0, -0.02 * sign)],
                t,
            ),
        ]
    return parts


def scissors(rng):
    t = rng.uniform(1.5, 2.6)
    open_ = rng.uniform(0.02, 0.12)
    ring = ORGANIC if rng.random() < 0.6 else METAL
    parts = [part(METAL, POLY, ellipse(0.0, 0.0, 0.03, 0.03, n=8), t * 2)]
    for sign in (-1, 1):
        parts += [
            part(
                METAL,
                POLY,
                [(-0.05, 0.0), (0.5, open_ * sign), (0.48, (open_ + 0.03) * sign), (0.0, 0.05 * sign)],
                t,
            ),
            part(
                ring,
                LOOP,
                ellipse(-0.3, 0.13 * sign, 0.14, 0.08, n=14),
                2.4 if ring == ORGANIC else t,
                width=0.035,
            ),
            part(ring, POLY, rect(-0.18, 0.02 * sign, -0.02, 0.07 * sign), 2.4 if ring == ORGANIC else t),
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


def bottle(rng):
    liquid = rng.uniform(1.0, 2.6)
    glass = rng.random() < 0.3
    return [
        part(INORGANIC if glass else ORGANIC, POLY, rect(-0.5, -0.16, 0.25, 0.16), liquid),
        part(INORGANIC if glass else ORGANIC, POLY, rect(0.25, -0.06, 0.45, 0.06), liquid * 0.5),
        part(INORGANIC, POLY, rect(0.43, -0.07, 0.5, 0.07), 0.8),
    ]


def electronics(rng):
    t = rng.uniform(0.9, 1.8)
    parts = [
        part(INORGANIC, POLY, rect(-0.5, -0.33, 0.5, 0.33), t),
        part(METAL, POLY, rect(-0.4, 0.05, 0.1, 0.28), rng.uniform(0.8, 1.6)),
    ]
    for _ in range(rng.integers(3, 8)):
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
    (bottle, 2, (0.15, 0.35)),
    (electronics, 2, (0.15, 0.4)),
    (cable, 3, (0.15, 0.5)),
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
