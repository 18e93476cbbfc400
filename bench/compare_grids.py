"""The article's attack and the corrected one, side by side: final sample grids and headline metrics.

    python bench/compare_grids.py runs/blog runs/corrected --out bench/figures/blog_vs_corrected.png

Each RUN_DIR is a finished `python main.py` run (samples/final_grid.png and results.json). The
README's picture was made this way from the runs it quotes.
"""
import argparse
import json
import sys
from pathlib import Path


def panel_title(run_dir):
    """'variant: evaluator x.xx, target y.yy, FID_eval f' from a run's results.json."""
    attack = json.loads((run_dir / "results.json").read_text())["attack"]
    return (f"{attack['variant']}: accuracy {attack['accuracy_by_evaluator']:.3f} (evaluator), "
            f"{attack['accuracy_by_target']:.3f} (target)\nFID_eval {attack['fid_evaluator']:.1f}, "
            f"KNN {attack['knn_dist']:.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders, one panel each")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        for name in ("results.json", "samples/final_grid.png"):
            if not (run_dir / name).is_file():
                print(f"compare_grids.py: error: {run_dir} has no {name}; pass finished run folders",
                      file=sys.stderr)
                return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(args.run_dirs), figsize=(5 * len(args.run_dirs), 5.6), squeeze=False)
    for ax, run_dir in zip(axes[0], args.run_dirs):
        ax.imshow(plt.imread(run_dir / "samples" / "final_grid.png"), cmap="gray")
        ax.set_title(panel_title(run_dir), fontsize=9)
        ax.set_ylabel("requested class (row r = digit r)")
        ax.set_xticks([])
        ax.set_yticks([16 + 30 * r for r in range(10)], [str(r) for r in range(10)])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
