"""Our deterministic 80/20 train/test split.

Rule (exact): take the usable rows, order them by their 5-class presence vector (gun, knife, wrench,
pliers, scissors), then by `stable_hash(seed, 'split', id)`, then by id; the row at 0-based position j
in that order is 'test' iff j % 5 == 4, else 'train'.

So exactly floor(n/5) of the n usable rows are test, each label combination is a contiguous run
whose test count is floor or ceil of a fifth of it (the per-class test share stays at 20% up to
rounding of one image per combination), and within a combination the hash, not file or row order,
picks which ids. The split depends only on the ids, their labels and the seed; build-shards reuses
the manifest's column, so an image has the same split in every subset.
"""

import duckdb
import pyarrow as pa

from base.hashing import stable_hashes
from base.vocabulary import CLASSES

TEST_EVERY = 5
"""One in five rows goes to test: 80/20."""


def register_split_hash(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    """Make `split_hash(id)` (stable_hash(seed, 'split', id) as UBIGINT) callable in con's SQL."""

    def split_hash(ids: pa.Array) -> pa.Array:
        return pa.array(stable_hashes(seed, "split", ids.to_pylist()), pa.uint64())

    con.create_function("split_hash", split_hash, ["VARCHAR"], "UBIGINT", type="arrow")


def split_sql(relation: str) -> str:
    """SELECT id, split over `relation`, the usable rows only (columns id and the CLASSES): narrow rows,
    so the one global sort this rule needs stays small. Needs register_split_hash on the connection."""
    order = ", ".join(CLASSES) + ", split_hash(id), id"
    position = f"row_number() OVER (ORDER BY {order}) - 1"
    test = f"({position}) % {TEST_EVERY} = {TEST_EVERY - 1}"
    return f"SELECT id, CASE WHEN {test} THEN 'test' ELSE 'train' END AS split FROM {relation}"
