"""Issue 19: the mutation testing scope, and the score per module from mutmut's results.

`python3 bench/mutation_score.py --patterns` prints the mutant-name patterns that `bench/mutation.sh` hands to
`mutmut run` (the whole module, or for subsets.py and shards.py the functions listed: not the I/O);
`python3 bench/mutation_score.py` reads `mutmut results --all true` on stdin and prints a table per module
(total, killed, survived, timeout, no tests, other) and every surviving mutant's name. A mutant counts
as killed when a test failed or timed out with it.
"""

import fnmatch
import sys
from collections import Counter

SCOPE = {
    "pipeline.split": ["*"],
    "base.hashing": ["*"],
    "pipeline.labels": ["*"],
    "pipeline.layout": ["read_annotation"],  # was labels.py's when the figures in RESULTS were measured
    "pipeline.subsets": ["read_keys", "check_splits", "check_sorted_ids", "split_codes", "official_splits",
                         "id_hashes", "select", "per_class_positives", "plan", "shard_numbers",
                         "build_subset", "subset_metadata"],
    "pipeline.shards": ["write_tar", "tar_header", "_header_template", "split_entry"],
    "model.metrics": ["*"],
    "model.loss": ["*"],
    "model.alarms": ["*"],
}
KILLED = ("killed", "timeout")


def patterns() -> list[str]:
    return [f"{module}.x_{function}__mutmut_*" for module, names in SCOPE.items() for function in names]


def in_scope(name: str) -> str | None:
    """The module of a mutant name within SCOPE, else None."""
    return next((module for module in SCOPE if any(fnmatch.fnmatchcase(name, p) for p in patterns()
                                                   if p.startswith(module + ".x_"))), None)


def parse_results(lines) -> dict[str, str]:
    """{mutant name: status} from `mutmut results --all true` lines ('    name: status')."""
    pairs = (line.strip().split(": ", 1) for line in lines if ": " in line)
    return {name: status for name, status in pairs}


def tally(results: dict[str, str]) -> dict[str, Counter]:
    counts = {module: Counter() for module in SCOPE}
    for name, status in results.items():
        module = in_scope(name)
        if module:
            counts[module][status] += 1
    return counts


def report(results: dict[str, str]) -> str:
    counts = tally(results)
    rows = ["| module | mutants | killed | survived | timeout | no tests | other | score |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for module, c in [*counts.items(), ("all", sum(counts.values(), Counter()))]:
        total, killed = sum(c.values()), sum(c[s] for s in KILLED)
        other = total - killed - c["survived"] - c["no tests"]
        score = f"{100 * killed / total:.1f}%" if total else "-"
        rows.append(f"| {module} | {total} | {c['killed']} | {c['survived']} | {c['timeout']} | "
                    f"{c['no tests']} | {other} | {score} |")
    left = sorted(n for n, s in results.items() if in_scope(n) and s not in KILLED)
    return "\n".join(rows + ["", f"not killed ({len(left)}):", *(f"  {n}: {results[n]}" for n in left)])


if __name__ == "__main__":
    if sys.argv[1:] == ["--patterns"]:
        print(" ".join(patterns()))
    else:
        print(report(parse_results(sys.stdin)))
