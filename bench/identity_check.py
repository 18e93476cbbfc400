"""Identity check of two sets of run folders (before and after a change): results.json metrics and final grids.

    python bench/identity_check.py BEFORE_DIR AFTER_DIR RUN_NAME [RUN_NAME ...]

Each RUN_NAME is a run folder under both; wall times, paths and versions are dropped from results.json, and
every final_grid.png under the run (the attack's and each generative control's) must be byte-identical.
Exits 1 when anything differs or a run is unfinished.
"""
import argparse
import json
import sys
from pathlib import Path

IGNORED = ("seconds", "path", "versions")  # what a rerun changes without changing the arithmetic


def strip(value):
    """results.json without the keys a rerun changes anyway."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def compare(before, after):
    """One line about a pair of run folders, and whether they are identical."""
    if not (before / "results.json").is_file() or not (after / "results.json").is_file():
        return f"{before.name}: not finished on both sides", False
    a, b = (strip(json.loads((p / "results.json").read_text())) for p in (before, after))
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    grids = sorted(p.relative_to(before) for p in before.rglob("final_grid.png"))
    same_grids = all((after / g).is_file() and (before / g).read_bytes() == (after / g).read_bytes() for g in grids)
    line = (f"{before.name}: metrics {'identical' if not differ else 'DIFFER in ' + ', '.join(differ)}; "
            f"{len(grids)} final grids {'byte-identical' if same_grids else 'DIFFER'}")
    return line, not differ and same_grids


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", type=Path, help="the folder holding the runs made before the change")
    p.add_argument("after", type=Path, help="the folder holding the same runs made after it")
    p.add_argument("names", nargs="+", metavar="RUN_NAME", help="run folders under both")
    args = p.parse_args(argv)
    results = [compare(args.before / n, args.after / n) for n in args.names]
    for line, _ in results:
        print(line)
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
