"""The README's per-protocol table: attack and controls over seeds, by each evaluator seed, from run folders.

    python main.py --protocol disjoint --seeds 1 2 3 --run_dir runs/disjoint
    for s in 1 2 3; do for e in 1 2; do python main.py --evaluate runs/disjoint/seed_$s --evaluator_seed $e; done; done
    python experiments/seed_table.py runs/disjoint --evaluator_seeds 0 1 2 --seeds 1 2 3

Reads RUN_DIR/seed_*/results.json (the run's own evaluator, seed 0 by default) and
results_evaluator<S>.json (written by --evaluate). Mean ± std over the seeds (sample std, ddof 1,
as seeds_summary.json), the lowest class of any seed, each seed's per-class accuracies, and how many
classes fall below 0.5 (the rate of failing classes, per evaluator seed).
"""
import argparse
import json
from pathlib import Path

import numpy as np

ROWS = [("attack", "attack"), ("no_leak", "control: no-leak API, same attack and budget"),
        ("aux_as_labelled", "control: the aux images with the API's labels"),
        ("true_labels", "control: the attack with the aux images' true labels"),
        ("mi_face_art", "reference: MI-FACE, white box, no data (ART's loop at its defaults)"),
        ("mi_face", "reference: MI-FACE, white box, no data (stop at p 0.99, 1,000 steps)")]


def results_by_seed(run_dir, evaluator_seed, seeds=None):
    """{attack seed: results} for one evaluator seed (its own results.json when the run used that evaluator)."""
    out = {}
    for seed_dir in sorted(Path(run_dir).glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        seed, own = int(seed_dir.name.split("_")[1]), seed_dir / "results.json"
        if not own.is_file() or (seeds and seed not in seeds):
            continue
        config = json.loads((seed_dir / "config.json").read_text())
        run_seed = config["flags"].get("evaluator_seed", 0)
        path = own if run_seed == evaluator_seed else seed_dir / f"results_evaluator{evaluator_seed}.json"
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def row_of(results, key):
    """The attack's or one control's metrics in one run (None when the run has no such control)."""
    return results["attack"] if key == "attack" else results["controls"].get(key)


def mean_std(values):
    """'m ± s' over the seeds (one value: just the value)."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a --seeds folder (RUN_DIR/seed_<S>/results.json)")
    p.add_argument("--evaluator_seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="attack seeds to include (default: all)")
    args = p.parse_args()
    by_eval = {e: results_by_seed(args.run_dir, e, args.seeds) for e in args.evaluator_seeds}
    if not any(by_eval.values()):
        raise SystemExit(f"{args.run_dir}: no finished seed_<S>/results.json there; run main.py --seeds first")
    print("| | " + " | ".join(f"evaluator seed {e} (seeds {sorted(r)})" for e, r in by_eval.items())
          + " | lowest class (evaluator seeds in order) |")
    print("| --- |" + " --- |" * (len(by_eval) + 1))
    for key, name in ROWS:
        cells, lows = [], []
        for runs in by_eval.values():
            rows = [row_of(r, key) for r in runs.values() if row_of(r, key) is not None]
            fewer = f" ({len(rows)} of {len(runs)} seeds)" if 0 < len(rows) < len(runs) else ""  # no such control
            cells.append(mean_std([m["accuracy_by_evaluator"] for m in rows]) + fewer if rows else "—")
            per_class = [min(m["per_class_accuracy_by_evaluator"]) for m in rows
                         if "per_class_accuracy_by_evaluator" in m]
            lows.append(f"{min(per_class):.2f}" if per_class else "—")
        if any(c != "—" for c in cells):
            print(f"| {name} | " + " | ".join(cells) + f" | {' / '.join(lows)} |")
    for e, runs in by_eval.items():
        for seed, r in runs.items():
            pcs = " ".join(f"{x:.2f}" for x in r["attack"]["per_class_accuracy_by_evaluator"])
            print(f"evaluator seed {e}, attack seed {seed}: per class {pcs}")
    for e, runs in by_eval.items():
        print(failing_classes(e, [r["attack"]["per_class_accuracy_by_evaluator"] for r in runs.values()]))


def failing_classes(evaluator_seed, per_class, bar=0.5):
    """One line: how many (seed, class) cells of the attack fall below the bar, in all and per class."""
    cells = np.asarray(per_class, dtype=float) < bar  # (seeds, classes)
    return (f"evaluator seed {evaluator_seed}: {cells.sum()} of {cells.size} classes below {bar} over "
            f"{len(cells)} seeds; per class {' '.join(str(n) for n in cells.sum(0))}")


if __name__ == "__main__":
    main()
