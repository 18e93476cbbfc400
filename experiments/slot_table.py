"""Per class and slot of a `--recipe g_slots=K` run: how often the evaluator reads G's samples as the class asked.

    python experiments/slot_table.py runs/disjoint_search_t4s4/affine45_slots5 --evaluator_seed 0

The noise picks the slot (the largest of its first K entries), so each slot's samples are Gaussian
noises drawn until 100 pick it (seeded, the same for every run). A cell: the share the evaluator
reads as the class asked, and in brackets the digit it reads most often.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacklab import sampling  # noqa: E402
from attacklab.attack import load_generator, n_classes  # noqa: E402
from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.data import load_data  # noqa: E402
from attacklab.evaluation import evaluator_stage  # noqa: E402
from attacklab.protocols import PROTOCOLS  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402
from attacklab.runtime import UserError  # noqa: E402


def slot_noise(slot, slots, nz, n=100, seed=0):
    """n Gaussian noises (n, nz, 1, 1) whose first `slots` entries are largest at `slot`."""
    z = torch.randn(40 * n * slots, nz, 1, 1, generator=torch.Generator().manual_seed(seed))
    return z[z[:, :slots, 0, 0].argmax(1) == slot][:n]


def slot_images(g, c, noises):
    """G's images of class c in [0, 1], one batch per slot's noises: [(n, 1, 28, 28) per slot]."""
    return [sampling.generator_images(g, torch.full((len(z),), c), z) for z in noises]


def slot_rows(run, evaluator_seed):
    """{class: [(share read as the class, digit read most often) per slot]} for one run."""
    cfg = load_run_config(run, "slot_table.py")
    slots = cfg["recipe"]["g_slots"]
    if slots < 2:
        raise UserError(f"{run}: its G has one drawing per class (g_slots=1); pass a run made with g_slots > 1")
    g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
    private = PROTOCOLS[cfg["flags"]["protocol"]].private_classes
    data = load_data(cfg["flags"]["data_dir"])
    evaluator = evaluator_stage(cfg["flags"], data, "cpu", private, evaluator_seed)[0].model
    noises = [slot_noise(k, slots, cfg["flags"]["dim_initial_vec"]) for k in range(slots)]
    rows = {}
    for c in range(n_classes(cfg)):
        rows[c] = []
        for images in slot_images(g, c, noises):
            read = predict_labels(evaluator, images)
            rows[c].append(((read == c).float().mean().item(), read.mode().values.item()))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders made with --recipe g_slots=K, K > 1")
    p.add_argument("--evaluator_seed", type=int, default=0, help="evaluator seed (default: 0)")
    args = p.parse_args()
    try:
        tables = [(run, slot_rows(run, args.evaluator_seed)) for run in args.runs]
    except UserError as e:
        sys.exit(f"error: {e}")
    for run, rows in tables:
        k = len(rows[0])
        print(f"\n{run}, evaluator seed {args.evaluator_seed}\n")
        print("| class | " + " | ".join(f"slot {s}" for s in range(k)) + " |")
        print("| --- | " + " | ".join("---" for _ in range(k)) + " |")
        for c, cells in rows.items():
            print(f"| {c} | " + " | ".join(f"{share:.2f} ({digit})" for share, digit in cells) + " |")


if __name__ == "__main__":
    main()
