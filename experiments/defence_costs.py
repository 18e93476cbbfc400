"""What each defence costs the provider, before any attack: the target's test accuracy per (defence, strength).

    python experiments/defence_costs.py --defences none label_smoothing_neg=-0.05,-0.1 dp_sgd=8,1 mid=0.01,0.1 bido=0.05,0.5

Trains only the disjoint protocol's target (main.py's provider stage, its defaults: 2 epochs, batch 200)
for each point and seed, into a scratch folder, and prints a Markdown table. It chooses the frontier's
strengths (docs/defences.md: from "< 1 point" to "about 5 points" of test accuracy); no attack runs.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacklab import provider  # noqa: E402
from attacklab.classifiers import classifier_accuracy  # noqa: E402
from attacklab.data import load_data  # noqa: E402
from attacklab.frontier import parse_defence  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.report import Logger  # noqa: E402
from attacklab.runtime import select_device  # noqa: E402


def target_cost(flags, seed, device, data, scratch):
    """(test accuracy, the defence's report) of one target trained as main.py would."""
    cfg = {"flags": flags, "seed": seed}
    paths = {"models": Path(scratch)}
    private = protocol_for(flags).private(data)
    logger = Logger(Path(scratch) / "tb")
    try:
        model, _, _, report = provider.train_target_stage(cfg, private, paths, device, logger)
    finally:
        logger.close()
    return classifier_accuracy(model, *private["test"]), report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defences", nargs="+", default=["none"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--private_digits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs_target_model", type=int, default=2)
    p.add_argument("--data_dir", default=str(REPO / "Data" / "MNIST"))
    args = p.parse_args()
    data, device = load_data(Path(args.data_dir)), select_device(1, 0)
    print("| defence | strength | seeds | test accuracy | DP ε (δ = 1e-5) |\n| --- | --- | --- | --- | --- |")
    for name, strength in [pt for text in args.defences for pt in parse_defence(text)]:
        flags = {"protocol": "disjoint", "private_digits": args.private_digits, "defence": name,
                 "defence_strength": strength, "epochs_target_model": args.epochs_target_model, "batch_size": 200,
                 "ngpu": 1, "data_dir": args.data_dir}
        accs, eps = [], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as scratch:
                acc, report = target_cost(flags, seed, device, data, scratch)
            accs.append(acc)
            eps += [report["epsilon"]] if "epsilon" in report else []
        spread = f" ± {np.std(accs, ddof=1):.4f}" if len(accs) > 1 else ""
        print(f"| {name} | {'' if strength is None else f'{strength:g}'} | {len(accs)} | {np.mean(accs):.4f}{spread} "
              f"| {f'{np.mean(eps):.2f}' if eps else '—'} |", flush=True)


if __name__ == "__main__":
    main()
