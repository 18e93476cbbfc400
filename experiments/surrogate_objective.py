"""How well G's samples and real private images score G's surrogate term (docs/disjoint.md, "One shape per class").

    python experiments/surrogate_objective.py runs/disjoint/seed_4 runs/disjoint/seed_2

For each run and class c: the run's own surrogate cross-entropy for c, as G's loss computes it (the
recipe's shift, rotation, rescaling, hidden square and noise; the mean of 10 draws), on 100 of G's
samples (the run's fixed evaluation noise) and on the first 100 private test images of class c. The
second uses the experimenter's data: the attacker never sees a 0-4 image.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacklab import sampling  # noqa: E402
from attacklab.attack import load_generator, load_surrogate  # noqa: E402
from attacklab.data import load_data, to_unit  # noqa: E402
from attacklab.evaluation import eval_requests  # noqa: E402
from attacklab.losses import surrogate_loss  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402
from attacklab.runtime import UserError  # noqa: E402


def objective(surrogate, images, c, recipe, draws=10):
    """The surrogate term for class c on images in [0, 1], averaged over `draws` random views."""
    asked = torch.full((len(images),), c)
    with torch.no_grad():
        return sum(surrogate_loss(surrogate, images * 2 - 1, asked, recipe).item() for _ in range(draws)) / draws


def run_row(run, n=100):
    """(G's term per class, real images' term per class) for one run folder."""
    cfg = load_run_config(run, "surrogate_objective.py")
    protocol = protocol_for(cfg["flags"])
    surrogate, _ = load_surrogate(Path(run) / "models" / "surrogate.pt", "cpu", protocol.n_classes,
                                  cfg["recipe"]["surrogate_models"])
    if surrogate is None:
        raise UserError(f"{run}: no models/surrogate.pt; pass a run whose attack trained a surrogate")
    g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
    noise, requested = eval_requests(cfg, "cpu")
    fakes = sampling.generator_images(g, requested, noise)
    test_x, test_y = protocol.private(load_data(cfg["flags"]["data_dir"]))["test"]
    torch.manual_seed(0)  # the same random views for every run
    return ([objective(surrogate, fakes[requested == c][:n], c, cfg["recipe"]) for c in range(protocol.n_classes)],
            [objective(surrogate, to_unit(test_x[test_y == c][:n]), c, cfg["recipe"])
             for c in range(protocol.n_classes)])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders whose attack trained a surrogate (config.json, models/)")
    args = p.parse_args()
    try:
        rows = [(run, *run_row(run)) for run in args.runs]
    except UserError as e:
        sys.exit(f"error: {e}")
    k = len(rows[0][1])
    print("| run | images | " + " | ".join(f"class {c}" for c in range(k)) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in range(k)) + " |")
    for run, fake, real in rows:
        for name, values in (("G's samples", fake), ("real private test images", real)):
            print(f"| {run} | {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    main()
