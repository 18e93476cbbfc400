"""An attacker-side choice among G's slots (docs/disjoint.md, "Choosing drawings by distance to the aux images").

    python experiments/slot_select.py runs/disjoint_search_t8s8/affine45_slots5 --keep 2 --evaluator_seeds 0 2

The attacker knows its images hold no private class, so a drawing of class c that lies close to them
is suspect. For each class and slot of a `--recipe g_slots=K` run: 100 noises that pick the slot
(experiments/slot_table.py), the mean pixel distance of G's samples to the nearest of the attacker's
aux images (the attacker's data only: no query, no label). It keeps the `keep` slots per class that
lie farthest from the aux images, then the experimenter's evaluator judges all slots and the kept
ones (equal weight per slot, 100 samples each).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacklab.attack import load_generator, n_classes  # noqa: E402
from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.data import load_data, to_unit  # noqa: E402
from attacklab.evaluation import evaluator_stage  # noqa: E402
from attacklab.metrics import nearest_distances  # noqa: E402
from attacklab.protocols import PROTOCOLS  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402
from attacklab.runtime import UserError  # noqa: E402
from slot_table import slot_images, slot_noise  # noqa: E402


def aux_distance(images, aux_pixels):
    """Mean over images (n, 1, 28, 28) in [0, 1] of the L2 pixel distance to the nearest aux image (N, 784)."""
    return nearest_distances(images.flatten(1), aux_pixels).mean().item()


def select(run, keep, evaluator_seeds):
    """{class: (per-slot mean distance, kept slots, {seed: (all slots' accuracy, kept slots' accuracy)})}."""
    cfg = load_run_config(run, "slot_select.py")
    slots = cfg["recipe"]["g_slots"]
    if not 1 <= keep < slots:
        raise UserError(f"{run}: --keep {keep} must be from 1 to {slots - 1} (its G has g_slots={slots})")
    data = load_data(cfg["flags"]["data_dir"])
    protocol = PROTOCOLS[cfg["flags"]["protocol"]]
    aux_pixels = to_unit(protocol.aux(data, cfg["flags"])[0]).flatten(1)  # (N, 784)
    g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
    judges = {s: evaluator_stage(cfg["flags"], data, "cpu", protocol.private_classes, s)[0].model
              for s in evaluator_seeds}
    noises = [slot_noise(k, slots, cfg["flags"]["dim_initial_vec"]) for k in range(slots)]
    out = {}
    for c in range(n_classes(cfg)):
        drawn = slot_images(g, c, noises)
        distance = [aux_distance(x, aux_pixels) for x in drawn]
        kept = sorted(range(slots), key=lambda k: -distance[k])[:keep]
        scores = {}
        for s, judge in judges.items():
            per_slot = [(predict_labels(judge, x) == c).float().mean().item() for x in drawn]
            scores[s] = (sum(per_slot) / slots, sum(per_slot[k] for k in kept) / keep)
        out[c] = (distance, kept, scores)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders made with --recipe g_slots=K, K > 1")
    p.add_argument("--keep", type=int, default=2, help="slots kept per class (default: 2)")
    p.add_argument("--evaluator_seeds", type=int, nargs="+", default=[0], help="evaluator seeds (default: 0)")
    args = p.parse_args()
    print("| run | class | distance to the aux images per slot | kept | "
          + " | ".join(f"evaluator {s}: all slots, kept" for s in args.evaluator_seeds) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in args.evaluator_seeds) + " |")
    try:
        for run in args.runs:
            rows = select(run, args.keep, args.evaluator_seeds)
            for c, (distance, kept, scores) in rows.items():
                print(f"| {run} | {c} | " + " ".join(f"{d:.2f}" for d in distance) + f" | {sorted(kept)} | "
                      + " | ".join(f"{a:.2f}, {b:.2f}" for a, b in scores.values()) + " |")
            means = [[sum(r[2][s][i] for r in rows.values()) / len(rows) for i in (0, 1)] for s in args.evaluator_seeds]
            print(f"| {run} | **mean** | | | " + " | ".join(f"**{a:.3f}, {b:.3f}**" for a, b in means) + " |")
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
