"""The README's table: protocols x API answer formats x the provider's defence, one main.py run per cell.

    python experiments/sweep_formats.py --out runs/formats                       # every cell, seed 1
    python experiments/sweep_formats.py --protocols disjoint --formats label probs --defences none
    python experiments/sweep_formats.py -- --controls none --recipe 'lr_decay="linear"' 'surrogate_affine=[0, 0]'
                                                                          # the README's table

Each cell runs `python main.py --protocol P --api_output F --defence D --seed S --run_dir OUT/P-F-D`
(finished cells are read, not rerun) and the table gives the attack's accuracy by the evaluator, the
no-leak control's (when the cell ran it), the target's test accuracy (the defence's cost) and the
queries; the rows are also appended to OUT/table.md with the flags that made them. A default run is
10-20 minutes on 2 CPU cores, so the whole table (18 cells) is several hours; the README's table
skips the controls (`-- --controls none`) and keeps disjoint on the recipe its cells were measured
with (no per-step decay, no rotations). The table's `same` cells ran 7 GAN epochs, the default before
commit 562f93b (now 3): rerun them with `--protocols same -- --epochs_gan 7 ...`; with 2 epochs its D
wins and the attack scores about 0.5. Its six cells took about two hours on one thread.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cell(out, protocol, fmt, defence, seed, extra):
    """One cell's results.json (run now if it is not finished)."""
    run_dir = Path(out) / f"{protocol}-{fmt}-{defence}-seed{seed}"
    if not (run_dir / "results.json").is_file():
        if (run_dir / "config.json").is_file():
            cmd = ["--resume", str(run_dir)]
        else:
            cmd = ["--protocol", protocol, "--api_output", fmt, "--defence", defence, "--seed", str(seed),
                   "--run_dir", str(run_dir), *extra]
        subprocess.run([sys.executable, str(REPO / "main.py"), *cmd], check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "results.json").read_text())


def show(table, line):
    """Print a line of the table and append it to the table file."""
    print(line, flush=True)
    with open(table, "a") as f:
        f.write(line + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "runs" / "formats"), help="folder of the cells' runs")
    p.add_argument("--protocols", nargs="+", default=["same", "disjoint", "letters"])
    p.add_argument("--formats", nargs="+", default=["label", "probs", "rounded"])
    p.add_argument("--defences", nargs="+", default=["none", "label_smoothing_neg"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("extra", nargs="*", help="further main.py flags for every cell (after --)")
    args = p.parse_args()
    table = Path(args.out) / "table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    show(table, f"\nseed {args.seed}, further flags: {' '.join(args.extra) or 'none'}\n")
    show(table, "| protocol | API output | defence | attack acc. (evaluator) | per class, lowest | no-leak control "
                "| surrogate-target agreement (val) | target test acc. | queries |")
    show(table, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for protocol in args.protocols:
        for fmt in args.formats:
            for defence in args.defences:
                r = run_cell(args.out, protocol, fmt, defence, args.seed, args.extra)
                no_leak = r["controls"].get("no_leak", {}).get("accuracy_by_evaluator")
                lowest = min(r["attack"]["per_class_accuracy_by_evaluator"])
                show(table, f"| {protocol} | {fmt} | {defence} | {r['attack']['accuracy_by_evaluator']:.3f} | "
                            f"{lowest:.2f} | {'—' if no_leak is None else f'{no_leak:.3f}'} | "
                            f"{r['attack']['surrogate']['agreement_with_target_on_val']:.3f} | "
                            f"{r['target']['test_accuracy']:.4f} | {r['attack']['queries']:,} |")


if __name__ == "__main__":
    main()
