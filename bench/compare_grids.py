"""Final sample grids side by side, with headline metrics: attacks, controls and the real private digits.

    python bench/compare_grids.py runs/blog runs/corrected --out bench/figures/blog_vs_corrected.png
    python bench/compare_grids.py RUN RUN/controls/no_leak --real --out attack_no_leak_real.png

Each RUN_DIR is a finished `python main.py` run (samples/final_grid.png and results.json), or a
control's folder RUN_DIR/controls/<name> (its metrics in RUN_DIR/controls/<name>.json). Rows are named
by the run's private digits. `--real` adds a last panel: ten private train images of each of the first
run's private digits (a fixed draw from its data folder), the images the attack tries to recover. The
README's pictures were made this way from the runs they quote.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def metrics_file(run_dir):
    """A run's results.json, or for a control's folder (RUN/controls/NAME) its RUN/controls/NAME.json."""
    own = run_dir / "results.json"
    return own if own.is_file() else run_dir.parent / f"{run_dir.name}.json"


def run_results(run_dir):
    """The results.json of a run, or of the run a control's folder (RUN/controls/NAME) belongs to."""
    own = run_dir / "results.json"
    return json.loads((own if own.is_file() else run_dir.parent.parent / "results.json").read_text())


def private_digits(run_dir):
    """The real digit of each grid row (results.json's private_digits; 0..9 for runs written before it)."""
    return run_results(run_dir).get("private_digits") or list(range(10))


def panel_title(run_dir):
    """'variant: accuracy by the judge and evaluator and target, FID_eval, KNN' from a run's (or control's) metrics."""
    data = json.loads(metrics_file(run_dir).read_text())
    attack = data.get("attack", data)
    name = attack.get("variant") if "attack" in data else f"control {run_dir.name}"
    if "protocol" in data:
        name = f"{data['protocol']}, {name}"
    config = next((c for c in (run_dir / "config.json", run_dir.parent.parent / "config.json") if c.is_file()), None)
    if config is not None:  # a control's folder is RUN/controls/NAME: its run's seed
        name = f"{name}, seed {json.loads(config.read_text())['seed']}"
    judge = f"{attack['judge']['accuracy']:.3f} (held-out judge), " if "judge" in attack else ""
    return (f"{name}\naccuracy {judge}{attack['accuracy_by_evaluator']:.3f} (evaluator), "
            f"{attack['accuracy_by_target']:.3f} (target)\nFID_eval {attack['fid_evaluator']:.1f}, "
            f"KNN {attack['knn_dist']:.1f}")


def real_grid(run_dir, digits, per_digit=10, seed=0):
    """Grid (H, W, 3) in [0, 1] of `per_digit` private train images per digit, drawn with a fixed seed."""
    import torch
    from torchvision.utils import make_grid
    from attacklab.data import load_split, to_unit
    config = json.loads((run_dir / "config.json").read_text())
    images, labels = load_split(config["flags"]["data_dir"], "train")
    g = torch.Generator().manual_seed(seed)
    picked = [torch.nonzero(labels == d).flatten() for d in digits]
    picked = torch.cat([idx[torch.randperm(len(idx), generator=g)[:per_digit]] for idx in picked])
    grid = make_grid(to_unit(images[picked]), nrow=per_digit, padding=2)  # (3, H, W)
    return grid.permute(1, 2, 0).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders, one panel each")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--real", action="store_true",
                   help="add a panel of real private train images of the first run's digits (read from its data folder)")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        for path, name in ((metrics_file(run_dir), "results.json"), (run_dir / "samples" / "final_grid.png",
                                                                      "samples/final_grid.png")):
            if not path.is_file():
                print(f"compare_grids.py: error: {run_dir} has no {name}; "
                      "pass finished run folders (or a run's controls/<name> folder)", file=sys.stderr)
                return 2
    if args.real and not (args.run_dirs[0] / "config.json").is_file():
        print(f"compare_grids.py: error: --real reads the data folder from the first run's config.json, and "
              f"{args.run_dirs[0]} has none; put a run folder first", file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grids = [plt.imread(run_dir / "samples" / "final_grid.png") for run_dir in args.run_dirs]
    titles = [panel_title(run_dir) for run_dir in args.run_dirs]
    digits = [private_digits(run_dir) for run_dir in args.run_dirs]
    if args.real:
        grids.append(real_grid(args.run_dirs[0], digits[0]))
        titles.append("real private train images\n(ten per digit, a fixed draw)")
        digits.append(digits[0])
    height = max(g.shape[0] for g in grids) / max(g.shape[1] for g in grids)
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5 * height + 0.8), squeeze=False)
    for ax, grid, title, row_digits in zip(axes[0], grids, titles, digits):
        ax.imshow(grid, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("requested digit")
        ax.set_xticks([])
        rows = (grid.shape[0] - 2) // 30
        ax.set_yticks([16 + 30 * r for r in range(rows)], [str(d) for d in row_digits[:rows]])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
