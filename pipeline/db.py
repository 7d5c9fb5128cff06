"""duckdb connections that spill to disk instead of growing: stages stay bounded at 1.06M ids."""

from pathlib import Path

import duckdb


def spilling_connection(spill_dir: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill_dir}'")
    return con
