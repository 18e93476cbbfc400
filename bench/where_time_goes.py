"""Where a run's time went: the wall seconds of each stage, from results.json, side by side for several runs.

    python bench/where_time_goes.py runs/default runs/disjoint_default

Stages: data (MNIST prepared or read), target (trained or loaded), evaluator (the evaluator and the
held-out judge, trained or read from the cache), surrogate and gan (the attack), evaluation (the final
metrics), controls (all of them; control_<name> each, for runs that recorded it). Run-level wall time
(Python's start, the folder, the report) is not in results.json: time the command for it.
"""
import argparse
import json
import sys
from pathlib import Path

ORDER = ("data", "target", "evaluator", "surrogate", "gan", "evaluation", "controls")


def stage_seconds(run_dir):
    """{stage: seconds} of a finished run, in ORDER, then each control's own."""
    seconds = json.loads((Path(run_dir) / "results.json").read_text()).get("seconds", {})
    stages = {k: seconds[k] for k in ORDER if k in seconds}
    stages.update({k: v for k, v in seconds.items() if k.startswith("control_")})
    return stages


def table(run_dirs):
    """Markdown table: one row per stage, one column per run (seconds and share of the run's stages)."""
    per_run = [stage_seconds(r) for r in run_dirs]
    totals = [sum(v for k, v in stages.items() if not k.startswith("control_")) for stages in per_run]
    names = list(dict.fromkeys(k for stages in per_run for k in stages))
    lines = ["| stage | " + " | ".join(Path(r).as_posix() for r in run_dirs) + " |",
             "| --- |" + " --- |" * len(run_dirs)]
    for name in names:
        cells = [f"{stages[name]:.0f} s ({100 * stages[name] / total:.0f} %)" if name in stages else "—"
                 for stages, total in zip(per_run, totals)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| all stages | " + " | ".join(f"{t:.0f} s" for t in totals) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders (results.json)")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.run_dirs if not (r / "results.json").is_file()]
    if missing:
        print(f"where_time_goes.py: error: {', '.join(missing)} holds no results.json; pass finished run folders",
              file=sys.stderr)
        return 2
    print(table(args.run_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
