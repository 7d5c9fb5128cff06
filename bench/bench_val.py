"""The val pass of `model train`: samples taken by their offsets against the whole train shards streamed
and filtered (the loader before issue 17's last change), on the same shards in one run, one process.

    python3 -m bench.bench_val --shards /tmp/learning/shards/sixray10 [--val-fraction 0.1]

The val split is a tenth of the train split (by id hash), spread over every train shard. Prints the time
of each way of reading it, then of decoding the kept samples at the test size (what both ways pay), and
the ratio of the two val passes (read + decode).
"""

import argparse
import time
from pathlib import Path

import webdataset as wds

from model.data import decode, read_indexed, sample_filter, split_info


def timed(f):
    started = time.perf_counter()
    result = f()
    return result, time.perf_counter() - started


def streamed(urls, keep) -> list:
    """The old way: every sample of every train shard parsed from the tar stream, a tenth kept."""
    return [s for url in urls for s in wds.tarfile_samples([{"url": url}]) if keep(s["__key__"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-size", type=int, default=128)
    args = parser.parse_args()
    info = split_info(args.shards, "val", args.val_fraction)
    urls = [str(args.shards / name) for name in info["shards"]]
    keep = sample_filter("val", args.val_fraction)
    old, t_old = timed(lambda: streamed(urls, keep))
    new, t_new = timed(lambda: [s for url, n in zip(urls, info["stored"], strict=True)
                                for s in read_indexed(url, n, keep)])
    assert [s["__key__"] for s in old] == [s["__key__"] for s in new]
    assert all(a["jpg"] == b["jpg"] and a["lbl"] == b["lbl"] for a, b in zip(old, new, strict=True))
    _, t_decode = timed(lambda: [decode(s, args.test_size, None, None) for s in new])
    stored = sum(info["stored"])
    print(f"val split: {len(new)} of {stored} train samples in {len(urls)} shards (same samples, same bytes)")
    print(f"read, streamed and filtered (reference): {t_old:6.1f} s")
    print(f"read by offset (ours):                   {t_new:6.1f} s   {t_old / t_new:5.1f}x faster")
    print(f"decode at {args.test_size} px (both):               {t_decode:6.1f} s")
    print(f"val pass, one process: {t_old + t_decode:.1f} s -> {t_new + t_decode:.1f} s "
          f"({(t_old + t_decode) / (t_new + t_decode):.2f}x)")


if __name__ == "__main__":
    main()
