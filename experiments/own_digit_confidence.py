"""Does a classifier of the attacker's own digits know a private digit when it sees one? (docs/heldout.md)

    python experiments/own_digit_confidence.py runs/heldout/d56789/seed_41 runs/heldout/odd/seed_41

For each disjoint run: h, the surrogate's network trained (seed 0, 3 epochs, +-2 px shifts) on the
attacker's images with their own digits as labels (knowledge the protocol does not give the attacker:
this asks whether the signal exists even with it). h's maximum softmax on an image is the open-set
score of Hendrycks and Gimpel (ICLR 2017): lower on what h never saw. Printed: the AUROC with which a
lower score picks real private test digits from real attacker test digits (1: always, 0.5: chance), and
per private digit, the same between real private test images of that digit and G's samples asked as it
(0.5: h sees G's row as it sees the real digit; near 1: G's row looks more like h's own digits than the
real digit does), with h's commonest answer on each. The experimenter's diagnostic: it reads private
test images, which the attacker never does.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bf_mnist as bfm  # noqa: E402
from attacklab import data as data_lib, sampling  # noqa: E402
from attacklab.attack import load_generator  # noqa: E402
from attacklab.classifiers import predict_logits  # noqa: E402
from attacklab.evaluation import eval_requests  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402


def auroc(low, high):
    """P(a score from `low` < a score from `high`), ties counting half: how well a low score picks `low`."""
    diff = high[None, :] - low[:, None]  # (len(low), len(high))
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def scores(h, images01):
    """(maximum softmax, argmax) of h on images in [0, 1]."""
    return predict_logits(h, images01).softmax(1).max(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="disjoint run folders (config.json, models/)")
    args = p.parse_args()
    print("| run | real private vs real attacker digits | digit | real vs G's row | score real / G | h calls G's row |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        cfg = load_run_config(run, "own_digit_confidence.py")
        flags = cfg["flags"]
        protocol = protocol_for(flags)
        data = data_lib.load_data(Path(flags["data_dir"]))
        aux_x, aux_digit = protocol.aux(data, flags)
        own = sorted(set(aux_digit.tolist()))  # the attacker's digits
        index = torch.full((data_lib.N_CLASSES,), -1, dtype=torch.int64)
        index[own] = torch.arange(len(own))
        h, _ = bfm.train_surrogate(aux_x, index[aux_digit], 0, torch.device("cpu"), 3, n_classes=len(own))
        test_x, test_y = data["test"]
        test_score, _ = scores(h, data_lib.to_unit(test_x))
        is_private = torch.isin(test_y, torch.tensor(protocol.private_classes))
        overall = auroc(test_score[is_private], test_score[~is_private])
        g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
        noise, requested = eval_requests(cfg, "cpu")
        fakes = sampling.generator_images(g, requested, noise)
        for c, digit in enumerate(protocol.private_classes):
            real = test_score[test_y == digit]
            fake, answer = scores(h, fakes[requested == c])
            commonest = own[torch.bincount(answer, minlength=len(own)).argmax().item()]
            print(f"| {run} | {overall:.3f} | {digit} | {auroc(real, fake):.3f} | {real.mean():.2f} / "
                  f"{fake.mean():.2f} | {commonest} |", flush=True)


if __name__ == "__main__":
    main()
