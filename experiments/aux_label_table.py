"""How a disjoint-protocol target labels the attacker's images (docs/disjoint.md): which aux digits teach which class.

    python experiments/aux_label_table.py runs/disjoint/seed_1 [RUN ...]

One table per run. Rows: the aux images' true digit (which the attacker never sees); columns: the API's
answer, as the private digit it stands for (0-4 by default; the run's --private_digits otherwise).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.data import load_data, to_unit  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.provider import load_target  # noqa: E402
from attacklab.runtime import UserError  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="finished --protocol disjoint runs (their models/target_best.pt)")
    args = p.parse_args()
    datasets = {}  # MNIST read once per data folder, however many runs share it
    for run in args.run_dirs:
        print_table(Path(run), datasets)


def print_table(run, datasets):
    """The share of each aux digit the run's target files under each private digit, and each label's count."""
    flags = json.loads((run / "config.json").read_text())["flags"]
    if flags.get("protocol") != "disjoint":
        raise SystemExit(f"{run}: not a --protocol disjoint run")
    protocol = protocol_for(flags)  # its private digits, 0-4 unless the run chose others
    try:
        target, _ = load_target(run / "models" / "target_best.pt", "cpu", "the run's target", protocol.n_classes,
                                flags.get("defence", "none"))
    except UserError as exc:
        raise SystemExit(str(exc)) from None
    if flags["data_dir"] not in datasets:
        datasets[flags["data_dir"]] = load_data(flags["data_dir"])
    images, digits = protocol.aux(datasets[flags["data_dir"]], flags)  # exactly the attacker's images
    answers = predict_labels(target, to_unit(images))
    print(f"\n{run}")
    classes = range(protocol.n_classes)
    print("| aux digit | " + " | ".join(f"API says {protocol.private_classes[c]}" for c in classes) + " |")
    print("| --- |" + " --- |" * protocol.n_classes)
    for d in torch.unique(digits).tolist():
        a = answers[digits == d]
        print(f"| {d} | " + " | ".join(f"{(a == c).float().mean().item():.2f}" for c in classes) + " |")
    print("| all (count) | " + " | ".join(f"{(answers == c).sum().item():,}" for c in classes) + " |")


if __name__ == "__main__":
    main()
