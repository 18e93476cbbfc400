"""Per class, the attacker keeps the G (of several attacks on one target) whose samples lie farthest from its aux images.

    python experiments/run_select.py runs/disjoint_search_t6s6/affine45 runs/disjoint_search_t6s101/affine45 \
        runs/disjoint_search_t6s102/affine45 --evaluator_seeds 0 2

The rule of experiments/slot_select.py applied to whole generators instead of slots (docs/disjoint.md,
"Choosing drawings by distance to the aux images"): for each class, 100 samples of each run's G (its
fixed evaluation noise), their mean pixel distance to the nearest aux image (the attacker's own data;
no query, no label), and the run whose samples lie farthest is the one kept for that class. The
evaluators (the experimenter's) then judge the kept G of each class, beside each run on its own.
The runs must attack the same target with the same protocol.

`--space features`: the distance is measured in a feature space the attacker builds from its aux images
alone: k-means (30 clusters) of their pixels, a SurrogateClassifier trained 3 epochs to tell the
clusters apart (rotations up to 15 degrees, rescaling up to 10%), its 128 penultimate activations.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bf_mnist as bfm  # noqa: E402
from attacklab import sampling  # noqa: E402
from attacklab.attack import load_generator, n_classes  # noqa: E402
from attacklab.classifiers import predict_labels  # noqa: E402
from attacklab.data import load_data, random_affine, to_unit  # noqa: E402
from attacklab.evaluation import eval_requests, evaluator_stage  # noqa: E402
from attacklab.metrics import nearest_distances  # noqa: E402
from attacklab.protocols import PROTOCOLS  # noqa: E402
from attacklab.runfolder import load_run_config  # noqa: E402
from attacklab.runtime import UserError, seeded_fork  # noqa: E402


def kmeans(x, k, generator, iters=25, chunk=4096):
    """Cluster of each row of x (N, D) after `iters` rounds of Lloyd's k-means from k random rows."""
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()  # (k, D)
    for _ in range(iters):
        assign = torch.cat([torch.cdist(x[i:i + chunk], centres).argmin(1) for i in range(0, len(x), chunk)])
        for j in range(k):
            if (assign == j).any():
                centres[j] = x[assign == j].mean(0)
    return assign


def cluster_features(aux01, k=30, epochs=3, seed=0, batch_size=128):
    """A function images (n, 1, 28, 28) in [0, 1] -> (n, 128): a CNN taught to tell k-means clusters of aux01 apart."""
    with seeded_fork(seed, torch.device("cpu")):
        clusters = kmeans(aux01.flatten(1), k, torch.Generator().manual_seed(seed))
        net = bfm.SurrogateClassifier(k)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            order = torch.randperm(len(aux01))
            for i in range(0, len(aux01), batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(net(random_affine(aux01[idx], 15, 0.1)), clusters[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    body = net.eval().requires_grad_(False).net[:-1]  # all but the last layer
    return lambda x: torch.cat([body(x[i:i + 2000]) for i in range(0, len(x), 2000)])


def class_scores(runs, evaluator_seeds, space="pixels", n=100):
    """{run: [(mean distance to the aux images, {evaluator seed: accuracy}) per class]}."""
    configs = [load_run_config(run, "run_select.py") for run in runs]
    targets = {(c["flags"]["protocol"], json.loads((Path(r) / "results.json").read_text())["target"]["val_accuracy"])
               for r, c in zip(runs, configs)}
    if len(targets) > 1:  # the same target has the same protocol and validation accuracy
        raise UserError("the runs attack different targets or protocols; pass finished runs of one target")
    flags = configs[0]["flags"]
    data = load_data(flags["data_dir"])
    protocol = PROTOCOLS[flags["protocol"]]
    aux = to_unit(protocol.aux(data, flags)[0])  # (N, 1, 28, 28)
    embed = (lambda x: x.flatten(1)) if space == "pixels" else cluster_features(aux)
    bank = embed(aux)  # (N, 784) or (N, 128)
    judges = {s: evaluator_stage(flags, data, "cpu", protocol.private_classes, s)[0].model for s in evaluator_seeds}
    out = {}
    for run, cfg in zip(runs, configs):
        g, _ = load_generator(cfg, Path(run) / "models" / "gan_last.pt", "cpu")
        noise, requested = eval_requests(cfg, "cpu")
        images = sampling.generator_images(g, requested, noise)
        out[run] = []
        for c in range(n_classes(cfg)):
            mine = images[requested == c][:n]
            accuracy = {s: (predict_labels(j, mine) == c).float().mean().item() for s, j in judges.items()}
            out[run].append((nearest_distances(embed(mine), bank).mean().item(), accuracy))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of attacks on one target (config.json, models/gan_last.pt)")
    p.add_argument("--evaluator_seeds", type=int, nargs="+", default=[0], help="evaluator seeds (default: 0)")
    p.add_argument("--space", choices=("pixels", "features"), default="pixels",
                   help="where distances are measured (default: pixels)")
    args = p.parse_args()
    if len(args.runs) < 2:
        sys.exit("error: pass at least two runs of one target: the rule chooses among them")
    try:
        scores = class_scores(args.runs, args.evaluator_seeds, args.space)
    except UserError as e:
        sys.exit(f"error: {e}")
    seeds = args.evaluator_seeds
    print("| class | " + " | ".join(f"{r}: distance, accuracy" for r in args.runs) + " | kept | kept's accuracy |")
    print("| --- | " + " | ".join("---" for _ in args.runs) + " | --- | --- |")
    k = len(scores[args.runs[0]])
    kept_acc = {s: [] for s in seeds}
    for c in range(k):
        cells = [scores[r][c] for r in args.runs]
        best = max(range(len(args.runs)), key=lambda i: cells[i][0])
        for s in seeds:
            kept_acc[s].append(cells[best][1][s])
        print(f"| {c} | " + " | ".join(f"{d:.2f}, " + "/".join(f"{a[s]:.2f}" for s in seeds) for d, a in cells)
              + f" | {Path(args.runs[best]).parent.name} | " + "/".join(f"{cells[best][1][s]:.2f}" for s in seeds) + " |")
    means = [" / ".join(f"{sum(scores[r][c][1][s] for c in range(k)) / k:.3f}" for s in seeds) for r in args.runs]
    print("| **mean** | " + " | ".join(means) + " | | "
          + " / ".join(f"**{sum(kept_acc[s]) / k:.3f}**" for s in seeds) + " |")


if __name__ == "__main__":
    main()
