"""How a disjoint-protocol target labels the attacker's 5-9 images (docs/disjoint.md): which aux digits teach which class.

    python experiments/aux_label_table.py runs/disjoint/seed_1

Rows: the aux images' true digit (which the attacker never sees); columns: the API's label 0-4.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bf_mnist as bfm  # noqa: E402
from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.data import SPLITS, load_data, to_unit  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished --protocol disjoint run (its models/target_best.pt)")
    args = p.parse_args()
    run = Path(args.run_dir)
    flags = json.loads((run / "config.json").read_text())["flags"]
    if flags.get("protocol") != "disjoint":
        raise SystemExit(f"{run}: not a --protocol disjoint run")
    ckpt = torch.load(run / "models" / "target_best.pt", map_location="cpu", weights_only=True)
    target = bfm.TargetModel(n_classes=5)
    target.load_state_dict(ckpt["model"])
    data = load_data(flags["data_dir"])
    images = torch.cat([data[s][0] for s in SPLITS])
    digits = torch.cat([data[s][1] for s in SPLITS])
    keep = digits >= 5
    answers, digits = predict_labels(target, to_unit(images[keep])), digits[keep]
    print("| aux digit | " + " | ".join(f"API says {c}" for c in range(5)) + " |")
    print("| --- |" + " --- |" * 5)
    for d in range(5, 10):
        a = answers[digits == d]
        print(f"| {d} | " + " | ".join(f"{(a == c).float().mean().item():.2f}" for c in range(5)) + " |")
    print("| all (count) | " + " | ".join(f"{(answers == c).sum().item():,}" for c in range(5)) + " |")


if __name__ == "__main__":
    main()
