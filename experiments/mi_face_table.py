"""MI-FACE, the white-box reference, on the targets main.py trains: ART's loop at its defaults beside this
project's loop (stop at p >= 0.99, 1,000 steps), judged by the held-out judge and by the evaluator.

    python experiments/mi_face_table.py --run_dir runs/mi_face same:1,2,3 disjoint:14,15,16 letters:1,2,3

Each PROTOCOL:SEEDS trains the target of `python main.py --protocol PROTOCOL --seed S` (the same seed, the
same stage, so the same target on one machine) into RUN_DIR/PROTOCOL/seed_S, runs both MI-FACE controls
there (controls/<name>.json, controls/<name>.png; a finished one is read, not run again) and prints the
table: mean ± std over seeds, and per class the judge's accuracy of each seed.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import main  # noqa: E402
from attacklab import evaluation, provider  # noqa: E402
from attacklab.controls import run_controls  # noqa: E402
from attacklab.data import load_data  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.report import Logger  # noqa: E402

NAMES = (("mi_face_art", "ART's MIFace loop at its defaults (10,000 steps)"),
         ("mi_face", "stop at p >= 0.99 or a stalled cost, 1,000 steps"))


def mi_face_controls(protocol, seed, run_dir):
    """Train (or load) the target of one protocol and seed, run both MI-FACE controls: {name: metrics}, target info."""
    args = main.build_parser().parse_args(["--protocol", protocol, "--seed", str(seed), "--run_dir", str(run_dir),
                                           "--controls", *(n for n, _ in NAMES)])
    cfg, paths, device = main.start_run(args)
    flags = cfg["flags"]
    data = load_data(Path(flags["data_dir"]))
    proto = protocol_for(flags)
    logger = Logger(paths["tensorboard"])
    try:
        target, target_info, _ = provider.provider_stage(cfg, proto.private(data), paths, device, logger)
    finally:
        logger.close()
    evaluator, _, _ = evaluation.evaluator_stage(flags, data, device, proto.private_classes)
    judge, _ = evaluation.judge_stage(flags, data, device, proto.private_classes)
    controls = run_controls(cfg, target, evaluator, proto.aux(data, flags), paths, device, judge=judge)
    return controls, target_info


def mean_std(values):
    """'m ± s' (sample std) over seeds."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main_(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="+", metavar="PROTOCOL:SEEDS", help="e.g. disjoint:14,15,16")
    p.add_argument("--run_dir", default="runs/mi_face")
    args = p.parse_args(argv)
    lines = ["| protocol | seeds | target test acc. | MI-FACE loop | judge | evaluator seed 0 | by the target | "
             "judge per class, each seed |", "| --- |" + " --- |" * 7]
    for cell in args.cells:
        protocol, seeds = cell.split(":")
        seeds = [int(s) for s in seeds.split(",")]
        runs = [mi_face_controls(protocol, s, Path(args.run_dir) / protocol / f"seed_{s}") for s in seeds]
        for name, label in NAMES:
            rows = [controls[name] for controls, _ in runs]
            per_class = "; ".join(" ".join(f"{v['accuracy']:.1f}" for v in r["judge"]["per_digit"].values())
                                  for r in rows)
            lines.append(f"| {protocol} | {' '.join(map(str, seeds))} | "
                         f"{mean_std([info['test_accuracy'] for _, info in runs])} | {label} | "
                         f"{mean_std([r['judge']['accuracy'] for r in rows])} | "
                         f"{mean_std([r['accuracy_by_evaluator'] for r in rows])} | "
                         f"{mean_std([r['accuracy_by_target'] for r in rows])} | {per_class} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
