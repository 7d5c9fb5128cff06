"""`pipeline` command line: thin click wrappers over the stage functions."""

import click


@click.group()
def main():
    """SIXray data pipeline: synth -> ingest -> build-shards -> stats."""


# --- synth (pipeline/synth.py) ---

# --- ingest (pipeline/ingest.py) ---

# --- build-shards (pipeline/shards.py) ---

# --- stats (pipeline/stats.py) ---
