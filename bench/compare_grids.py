"""The article's attack and the corrected one, side by side: final sample grids and headline metrics.

    python bench/compare_grids.py runs/blog runs/corrected --out bench/figures/blog_vs_corrected.png

Each RUN_DIR is a finished `python main.py` run (samples/final_grid.png and results.json), or a
control's folder RUN_DIR/controls/<name> (its metrics in RUN_DIR/controls/<name>.json). The README's
pictures were made this way from the runs they quote.
"""
import argparse
import json
import sys
from pathlib import Path


def metrics_file(run_dir):
    """A run's results.json, or for a control's folder (RUN/controls/NAME) its RUN/controls/NAME.json."""
    own = run_dir / "results.json"
    return own if own.is_file() else run_dir.parent / f"{run_dir.name}.json"


def panel_title(run_dir):
    """'variant: evaluator x.xx, target y.yy, FID_eval f' from a run's results.json (or a control's metrics)."""
    data = json.loads(metrics_file(run_dir).read_text())
    attack = data.get("attack", data)
    name = attack.get("variant") if "attack" in data else f"control {run_dir.name}"
    if "protocol" in data:
        name = f"{data['protocol']}, {name}"
    config = next((c for c in (run_dir / "config.json", run_dir.parent.parent / "config.json") if c.is_file()), None)
    if config is not None:  # a control's folder is RUN/controls/NAME: its run's seed
        name = f"{name}, seed {json.loads(config.read_text())['seed']}"
    return (f"{name}: accuracy {attack['accuracy_by_evaluator']:.3f} (evaluator), "
            f"{attack['accuracy_by_target']:.3f} (target)\nFID_eval {attack['fid_evaluator']:.1f}, "
            f"KNN {attack['knn_dist']:.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders, one panel each")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        for path, name in ((metrics_file(run_dir), "results.json"), (run_dir / "samples" / "final_grid.png",
                                                                      "samples/final_grid.png")):
            if not path.is_file():
                print(f"compare_grids.py: error: {run_dir} has no {name}; "
                      "pass finished run folders (or a run's controls/<name> folder)", file=sys.stderr)
                return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grids = [plt.imread(run_dir / "samples" / "final_grid.png") for run_dir in args.run_dirs]
    height = max(g.shape[0] for g in grids) / max(g.shape[1] for g in grids)
    fig, axes = plt.subplots(1, len(args.run_dirs), figsize=(5 * len(args.run_dirs), 5 * height + 0.6), squeeze=False)
    for ax, run_dir, grid in zip(axes[0], args.run_dirs, grids):
        ax.imshow(grid, cmap="gray")
        ax.set_title(panel_title(run_dir), fontsize=9)
        ax.set_ylabel("requested class (row r = digit r)")
        ax.set_xticks([])
        rows = (grid.shape[0] - 2) // 30
        ax.set_yticks([16 + 30 * r for r in range(rows)], [str(r) for r in range(rows)])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
