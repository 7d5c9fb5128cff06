"""The SIXray vocabulary: the five trained classes in the paper's order plus hammer, the label files'
class columns, and the subsets' ratios."""

RELEASE_POSITIVES, RELEASE_NEGATIVES = 8_929, 1_050_302
"""The scans of the SIXray release, with and without prohibited items (1,059,231 in all)."""

RATIOS = (10, 100, 1000)
"""SIXray10 / SIXray100 / SIXray1000: negatives per positive (SIXray1000: a quota of positives per class
and every negative)."""

CLASSES = ("gun", "knife", "wrench", "pliers", "scissors")
"""The five classes the paper trains and evaluates, in its column order."""

ALL_CLASSES = CLASSES + ("hammer",)
"""Hammer boxes exist in the release; the class is kept in the manifest but not trained."""

CSV_COLUMNS = tuple(c.capitalize() for c in CLASSES)
"""Label-file header after `name`: Gun,Knife,Wrench,Pliers,Scissors."""


def normalise_class(name: str) -> str | None:
    """Map a label-file or XML class name ('Knife', 'knife', ' KNIFE ') to ours, None if unknown."""
    key = name.strip().lower()
    return key if key in ALL_CLASSES else None
