"""How often the label-only API keeps calling an image class c when it is perturbed: G's samples, real images, aux images.

    python experiments/label_robustness.py runs/disjoint/seed_4 runs/disjoint/seed_2

For each run (protocol `disjoint`) and each private class c, three sets of 100 images: G's samples
requested as c (the run's fixed evaluation noise), real private test images of c, and aux images the
API calls c. Each is sent to the API as it is, with Gaussian noise (std 0.3), rotated/rescaled (up to
45 degrees, 20%), both, and with a random 14 x 14 square hidden; a cell is the fraction still
answered c. If G's samples keep their label as well as real images do, the labels carry no sign that
they are not real members of c; if they lose it more often, an attacker who queries perturbed samples
could tell. The experimenter's tool: it reads the private test images, which the attacker never does.
`--ask surrogate`: the run's surrogate labels the copies instead of the API. `--strong`: noise of std
0.6, rotations up to 90 degrees and rescaling up to 40%, a 20 x 20 square hidden, strokes thinned or
thickened by one pixel (3 x 3 minimum or maximum), and each half of the image alone (the other half
set to background).
"""
import argparse
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacklab import data as data_lib, sampling  # noqa: E402
from attacklab.api import PredictionAPI  # noqa: E402
from attacklab.attack import load_generator, load_surrogate  # noqa: E402
from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.evaluation import eval_requests  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.provider import load_target  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402

PERTURBATIONS = ("none", "noise 0.3", "affine 45/0.2", "both", "cutout 14")
# --strong: past the sizes G was trained against, and halves of the image (which half says c?)
STRONG = ("noise 0.6", "affine 90/0.4", "cutout 20", "thinner", "thicker", "top half", "bottom half", "left half",
          "right half")
_HALF = {"top half": (slice(14, None), slice(None)), "bottom half": (slice(None, 14), slice(None)),
         "left half": (slice(None), slice(14, None)), "right half": (slice(None), slice(None, 14))}


def perturb(x, kind, generator_seed):
    """x (N, 1, 28, 28) in [0, 1], perturbed as named, then clamped to [0, 1]."""
    torch.manual_seed(generator_seed)
    if kind in ("affine 45/0.2", "both", "affine 90/0.4"):
        x = data_lib.random_affine(x, *((90, 0.4) if kind == "affine 90/0.4" else (45, 0.2)))
    if kind in ("noise 0.3", "both", "noise 0.6"):
        x = x + (0.6 if kind == "noise 0.6" else 0.3) * torch.randn_like(x)
    if kind in ("cutout 14", "cutout 20"):
        x = data_lib.random_cutout(x, 20 if kind == "cutout 20" else 14)
    if kind in ("thinner", "thicker"):  # a 3 x 3 minimum (erosion) or maximum (dilation) of the strokes
        x = -F.max_pool2d(-x, 3, 1, 1) if kind == "thinner" else F.max_pool2d(x, 3, 1, 1)
    if kind in _HALF:  # the other half set to background
        x = x.clone()
        rows, cols = _HALF[kind]
        x[:, :, rows, cols] = 0
    return x.clamp(0, 1)


def image_sets(run, n=100):
    """{set name: {class: images (n, 1, 28, 28) in [0, 1]}}, the API and the config of one run."""
    cfg = load_run_config(run, "label_robustness.py")  # checked, and read where the folder is now
    flags = cfg["flags"]
    protocol = protocol_for(flags)
    target, _ = load_target(Path(run) / "models" / "target_best.pt", "cpu", "label_robustness", protocol.n_classes,
                            flags.get("defence", "none"))
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
    return sets, api, cfg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="disjoint run folders (config.json, models/)")
    p.add_argument("--ask", choices=("api", "surrogate"), default="api",
                   help="who labels the perturbed copies: the API, or the run's own surrogate (default: api)")
    p.add_argument("--strong", action="store_true", help="larger perturbations and image halves instead")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="only these private classes (default: all)")
    args = p.parse_args()
    kinds = STRONG if args.strong else PERTURBATIONS
    print("| run | class | set | " + " | ".join(kinds) + " |")
    print("| --- | --- | --- |" + " --- |" * len(kinds))
    for run in args.runs:
        sets, api, cfg = image_sets(run)
        if args.ask == "surrogate":  # the attacker's model of the API, which G was trained against
            surrogate, _ = load_surrogate(Path(run) / "models" / "surrogate.pt", "cpu", len(sets["G"]),
                                          cfg["recipe"]["surrogate_models"])
            api = partial(predict_labels, surrogate)
        for c in (sets["G"] if args.classes is None else args.classes):
            for name, by_class in sets.items():
                x = by_class[c]
                kept = [(api(perturb(x, kind, 1000 + c)) == c).float().mean().item() for kind in kinds]
                print(f"| {Path(run).name} | {c} | {name} | " + " | ".join(f"{k:.2f}" for k in kept) + " |", flush=True)


if __name__ == "__main__":
    main()
