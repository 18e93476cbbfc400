"""How busy G's samples are, and how hard the variation prior would pull on them (docs/heldout.md, candidate 2).

    python experiments/variation_scale.py runs/heldout/d56789/seed_41 runs/heldout/odd/seed_41

For each finished disjoint run: the mean total variation (attacklab.losses.total_variation, G's [-1, 1]
range) of 64 samples per class and of the attacker's own images, and the size of the gradient on G's
images of the run's surrogate term (its weight, its views) against that of excess_variation at weight 1.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacklab.attack import attacker_config, load_generator, load_surrogate, n_classes  # noqa: E402
from attacklab.data import load_data, one_hot, to_unit  # noqa: E402
from attacklab.losses import excess_variation, surrogate_loss, total_variation  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402
from attacklab.runtime import UserError  # noqa: E402


def grad_norm(loss_of, images):
    """|| d loss_of(images) / d images ||."""
    x = images.clone().requires_grad_(True)
    loss_of(x).backward()
    return x.grad.norm().item()


def run_row(run, per_class=64):
    """(TV of the aux images, TV of G's samples, surrogate-term gradient / variation-term gradient)."""
    cfg = load_run_config(run, "variation_scale.py")
    acfg, k = attacker_config(cfg), n_classes(attacker_config(cfg))
    g, _ = load_generator(acfg, Path(run) / "models" / "gan_last.pt", "cpu")
    surrogate, _ = load_surrogate(Path(run) / "models" / "surrogate.pt", "cpu", k, cfg["recipe"]["surrogate_models"])
    if surrogate is None:
        raise UserError(f"{run} trained no surrogate; pass a disjoint run folder")
    aux = protocol_for(cfg["flags"]).aux(load_data(Path(cfg["flags"]["data_dir"])), cfg["flags"])[0]
    gen = torch.Generator().manual_seed(0)
    real = to_unit(aux[torch.randperm(len(aux), generator=gen)[:per_class * k]]) * 2 - 1
    asked = torch.arange(k).repeat(per_class)
    torch.manual_seed(0)
    with torch.no_grad():
        fake = g.eval()(torch.randn(len(asked), cfg["flags"]["dim_initial_vec"], 1, 1), one_hot(asked))
    weight = cfg["recipe"]["surrogate_weight"]
    pull = grad_norm(lambda x: weight * surrogate_loss(surrogate, x, asked, cfg["recipe"]), fake)
    prior = grad_norm(lambda x: excess_variation(x, real), fake)
    return total_variation(real).mean().item(), total_variation(fake).mean().item(), pull / prior


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished disjoint run folders (RUN_DIR/seed_S)")
    args = parser.parse_args()
    print("| run | TV of aux images | TV of G's samples | surrogate gradient / variation gradient (weight 1) |")
    print("| --- | --- | --- | --- |")
    for run in args.runs:
        try:
            tv_real, tv_fake, ratio = run_row(run)
        except UserError as err:
            sys.exit(f"error: {err}")
        print(f"| {run} | {tv_real:.3f} | {tv_fake:.3f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
