"""Statistics of the real SIXray positives that `pipeline synth` reproduces, embedded as constants.

Measured from ../shared/data/sixray_positive_boxes.csv (17,643 boxes over 8,908 images) by `measure`;
tests/test_synth.py recomputes them from that file and checks these numbers, so they cannot drift.
Users of the package do not have the CSV, hence constants rather than a file read at run time.
"""

QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""The probabilities at which the size and box-area distributions below are tabulated."""

WIDTH_QUANTILES = (151, 238, 320, 369, 448, 515, 576, 632, 679, 775, 840, 929, 1157, 1512, 1773)
HEIGHT_QUANTILES = (144, 250, 349, 399, 459, 503, 539, 571, 598, 629, 664, 757, 921, 1035, 1691)
LOG_SIZE_CORRELATION = 0.51
"""Correlation of log width and log height over images (a Gaussian copula ties the two marginals)."""

BOX_AREA_QUANTILES = {
    # box area as a fraction of the image area, per class, at QUANTILE_LEVELS
    "gun": (
        0.0018,
        0.0072,
        0.0136,
        0.0203,
        0.0297,
        0.0376,
        0.0443,
        0.0508,
        0.0579,
        0.067,
        0.0781,
        0.0937,
        0.1071,
        0.1475,
        0.2882,
    ),
    "knife": (
        0.0027,
        0.0068,
        0.0192,
        0.0307,
        0.0497,
        0.0668,
        0.0829,
        0.0998,
        0.1205,
        0.1482,
        0.1778,
        0.2199,
        0.2602,
        0.3589,
        0.6082,
    ),
    "wrench": (
        0.0011,
        0.0037,
        0.0072,
        0.01,
        0.0163,
        0.023,
        0.0313,
        0.0435,
        0.0578,
        0.0764,
        0.0997,
        0.1387,
        0.194,
        0.3443,
        0.6914,
    ),
    "pliers": (
        0.0022,
        0.0052,
        0.0097,
        0.0129,
        0.0184,
        0.0236,
        0.0289,
        0.0354,
        0.0435,
        0.0545,
        0.0703,
        0.0961,
        0.1234,
        0.1717,
        0.6343,
    ),
    "scissors": (
        0.0014,
        0.0029,
        0.0057,
        0.008,
        0.0111,
        0.0141,
        0.0173,
        0.0212,
        0.0252,
        0.0333,
        0.046,
        0.0738,
        0.1037,
        0.172,
        0.6612,
    ),
}
BOX_AREA_QUANTILES["hammer"] = BOX_AREA_QUANTILES["wrench"]
"""The CSV has no hammer boxes; a hammer is a hand tool of a wrench's size, so it borrows that table."""

CLASS_COMBINATIONS = {
    # the set of (trained) classes in a positive image -> number of real images with exactly that set
    ("pliers",): 2371,
    ("gun",): 1484,
    ("scissors",): 885,
    ("pliers", "wrench"): 852,
    ("knife",): 771,
    ("gun", "knife"): 700,
    ("wrench",): 687,
    ("gun", "pliers"): 412,
    ("gun", "knife", "wrench"): 190,
    ("gun", "pliers", "wrench"): 140,
    ("knife", "wrench"): 135,
    ("gun", "knife", "pliers", "wrench"): 95,
    ("gun", "wrench"): 49,
    ("pliers", "scissors"): 35,
    ("gun", "knife", "scissors", "wrench"): 27,
    ("knife", "pliers", "wrench"): 17,
    ("gun", "pliers", "scissors"): 17,
    ("gun", "knife", "pliers"): 12,
    ("knife", "pliers"): 7,
    ("scissors", "wrench"): 6,
    ("knife", "scissors"): 6,
    ("pliers", "scissors", "wrench"): 5,
    ("gun", "scissors"): 3,
    ("knife", "scissors", "wrench"): 2,
}
"""Drawing whole combinations reproduces the class mix and the classes-per-image shares together."""

BOXES_PER_CLASS = {
    # class -> {boxes of that class in an image that has it: number of such real images}
    "gun": {1: 1627, 2: 1331, 3: 100, 4: 4, 5: 29, 6: 38},
    "knife": {1: 1122, 2: 574, 3: 258, 4: 5, 5: 3},
    "wrench": {1: 1553, 2: 500, 3: 110, 4: 26, 5: 7, 6: 1, 7: 8},
    "pliers": {1: 2829, 2: 923, 3: 157, 4: 47, 5: 6, 6: 1},
    "scissors": {1: 884, 2: 79, 3: 6, 4: 13, 5: 4},
    "hammer": {1: 9, 2: 1},
}
"""Hammer is our choice (the CSV has none): mostly one per image."""

HAMMER_SHARE = 0.03
"""Share of positive images that also carry a hammer (boxes in the XML only; no CSV column)."""


def measure(csv_path) -> dict:
    """Recompute the tables above from a boxes CSV (name,class,width,height,xmin,ymin,xmax,ymax)."""
    import duckdb

    con = duckdb.connect()
    con.register("raw", con.read_csv(str(csv_path)))
    con.execute(
        "CREATE VIEW boxes AS SELECT name, lower(class) AS cls, width, height,"
        " (xmax - xmin) * (ymax - ymin) / (width * height) AS area FROM raw"
    )
    levels = list(QUANTILE_LEVELS)
    images = "SELECT name, first(width) AS w, first(height) AS h FROM boxes GROUP BY name"
    widths, heights, corr = con.execute(
        f"SELECT quantile_cont(w, {levels}), quantile_cont(h, {levels}), corr(ln(w), ln(h)) FROM ({images})"
    ).fetchone()
    areas = dict(con.execute(f"SELECT cls, quantile_cont(area, {levels}) FROM boxes GROUP BY cls").fetchall())
    combos = con.execute("SELECT list_sort(list(DISTINCT cls)), count(*) FROM boxes GROUP BY name").fetchall()
    combinations: dict = {}
    for classes, _ in combos:
        combinations[tuple(classes)] = combinations.get(tuple(classes), 0) + 1
    per_class: dict = {}
    for cls, k, n in con.execute(
        "SELECT cls, k, count(*) FROM (SELECT name, cls, count(*) AS k FROM boxes GROUP BY ALL) GROUP BY ALL"
    ).fetchall():
        per_class.setdefault(cls, {})[k] = n
    return {
        "width": widths,
        "height": heights,
        "log_size_correlation": corr,
        "box_area": areas,
        "combinations": combinations,
        "boxes_per_class": per_class,
    }
