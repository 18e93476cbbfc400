"""The README's table: protocols x API answer formats x the provider's defence, one main.py run per cell.

    python experiments/sweep_formats.py --out runs/formats                       # every cell, seed 1
    python experiments/sweep_formats.py --protocols disjoint --formats label probs --defences none
    python experiments/sweep_formats.py -- --controls none --recipe 'lr_decay="linear"' 'surrogate_affine=[0, 0]'
                                                                          # the README's table

Each cell runs `python main.py --protocol P --api_output F --defence D --seed S --run_dir OUT/P-F-D-seedS`
as a Ray task (attacklab.sweep's runner: a local cluster, or --address; finished cells are read, an
interrupted one resumed, a failed one reported without stopping the others) and the table gives the attack's accuracy by the evaluator, the
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
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacklab.sweep import run_on_ray  # noqa: E402


@dataclass(frozen=True)
class FormatCell:
    """One cell of the table: a protocol, an answer format, a defence, a seed."""
    protocol: str
    fmt: str
    defence: str
    seed: int

    @property
    def point(self):
        return f"{self.protocol}-{self.fmt}-{self.defence}"

    def folder(self, out):
        return Path(out) / f"{self.point}-seed{self.seed}"

    def argv(self, out, extra):
        return ["--protocol", self.protocol, "--api_output", self.fmt, "--defence", self.defence, "--seed",
                str(self.seed), "--run_dir", str(self.folder(out)), *extra]


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
    p.add_argument("--address", default=None, help="a running Ray cluster (default: a local one on this machine)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("extra", nargs="*", help="further main.py flags for every cell (after --)")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = [FormatCell(pr, fmt, d, args.seed) for pr in args.protocols for fmt in args.formats for d in args.defences]
    run_on_ray(cells, out, lambda c: c.argv(out, args.extra), args.address, args.cpus)
    table = out / "table.md"
    show(table, f"\nseed {args.seed}, further flags: {' '.join(args.extra) or 'none'}\n")
    show(table, "| protocol | API output | defence | attack acc. (evaluator) | per class, lowest | no-leak control "
                "| surrogate-target agreement (val) | target test acc. | queries |")
    show(table, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cell in cells:
        if not (cell.folder(out) / "results.json").is_file():
            show(table, f"| {cell.protocol} | {cell.fmt} | {cell.defence} | failed: see {cell.folder(out)}.log |")
            continue
        r = json.loads((cell.folder(out) / "results.json").read_text())
        no_leak = r["controls"].get("no_leak", {}).get("accuracy_by_evaluator")
        lowest = min(r["attack"]["per_class_accuracy_by_evaluator"])
        show(table, f"| {cell.protocol} | {cell.fmt} | {cell.defence} | {r['attack']['accuracy_by_evaluator']:.3f} | "
                    f"{lowest:.2f} | {'—' if no_leak is None else f'{no_leak:.3f}'} | "
                    f"{r['attack']['surrogate']['agreement_with_target_on_val']:.3f} | "
                    f"{r['target']['test_accuracy']:.4f} | {r['attack']['queries']:,} |")


if __name__ == "__main__":
    main()
