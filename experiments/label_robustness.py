"""How often the label-only API keeps calling an image class c when it is perturbed: G's samples, real images, aux images.

    python experiments/label_robustness.py runs/disjoint/seed_4 runs/disjoint/seed_2

For each run (protocol `disjoint`) and each private class c, three sets of 100 images: G's samples
requested as c (the run's fixed evaluation noise), real private test images of c, and aux images the
API calls c. Each is sent to the API as it is, with Gaussian noise (std 0.3), rotated/rescaled (up to
45 degrees, 20%), and both; a cell is the fraction still answered c. If G's samples keep their label
as well as real images do, the labels carry no sign that they are not real members of c; if they
lose it more often, an attacker who queries perturbed samples could tell. The experimenter's tool:
it reads the private test images, which the attacker never does.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacklab import data as data_lib, sampling  # noqa: E402
from attacklab.api import PredictionAPI  # noqa: E402
from attacklab.attack import load_generator  # noqa: E402
from attacklab.evaluation import eval_requests  # noqa: E402
from attacklab.protocols import PROTOCOLS  # noqa: E402
from attacklab.provider import load_target  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402

PERTURBATIONS = ("none", "noise 0.3", "affine 45/0.2", "both")


def perturb(x, kind, generator_seed):
    """x (N, 1, 28, 28) in [0, 1], perturbed as named, then clamped to [0, 1]."""
    torch.manual_seed(generator_seed)
    if kind in ("affine 45/0.2", "both"):
        x = data_lib.random_affine(x, 45, 0.2)
    if kind in ("noise 0.3", "both"):
        x = x + 0.3 * torch.randn_like(x)
    return x.clamp(0, 1)


def image_sets(run, n=100):
    """{set name: {class: images (n, 1, 28, 28) in [0, 1]}} and the API of one run."""
    cfg = load_run_config(run, "label_robustness.py")  # checked, and read where the folder is now
    flags = cfg["flags"]
    protocol = PROTOCOLS[flags["protocol"]]
    target, _ = load_target(Path(run) / "models" / "target_best.pt", "cpu", "label_robustness", protocol.n_classes)
    api = PredictionAPI(target)
    g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
    noise, requested = eval_requests(cfg, "cpu")
    fakes = sampling.generator_images(g, requested, noise)
    data = data_lib.load_data(Path(flags["data_dir"]))
    test_x, test_y = protocol.private(data)["test"]
    aux_x = data_lib.to_unit(protocol.aux(data, flags)[0])
    aux_answer = api(aux_x)
    sets = {"G": {}, "real": {}, "aux": {}}
    for c in range(protocol.n_classes):
        sets["G"][c] = fakes[requested == c][:n]
        sets["real"][c] = data_lib.to_unit(test_x[test_y == c][:n])
        sets["aux"][c] = aux_x[aux_answer == c][:n]
    return sets, api


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="disjoint run folders (config.json, models/)")
    args = p.parse_args()
    print("| run | class | set | " + " | ".join(PERTURBATIONS) + " |")
    print("| --- | --- | --- |" + " --- |" * len(PERTURBATIONS))
    for run in args.runs:
        sets, api = image_sets(run)
        for c in sets["G"]:
            for name, by_class in sets.items():
                x = by_class[c]
                kept = [(api(perturb(x, kind, 1000 + c)) == c).float().mean().item() for kind in PERTURBATIONS]
                print(f"| {Path(run).name} | {c} | {name} | " + " | ".join(f"{k:.2f}" for k in kept) + " |", flush=True)


if __name__ == "__main__":
    main()
