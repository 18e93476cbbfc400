"""The experimenter's numbers: attack accuracy per class, Fréchet distance and KNN distance in evaluator features."""
import hashlib

import numpy as np
import torch

from attacklab.data import N_CLASSES


def tensor_digest(*tensors):
    """SHA-256 of tensors' bytes: ties a cached evaluator to the exact training data."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def accuracy_by_class(pred, requested, classes=N_CLASSES):
    """(overall accuracy, [accuracy of each class in classes]); classes: a sequence of labels, or k for 0..k-1."""
    hit = (pred == requested).float()
    classes = range(classes) if isinstance(classes, int) else classes
    per_class = [hit[requested == c].mean().item() if (requested == c).any() else float("nan")
                 for c in classes]
    return hit.mean().item(), per_class


def _sqrtm_psd(c):
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), in float64."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum().item() + (torch.trace(cov1) + torch.trace(cov2) - 2 * cross).item()


def feature_stats(feats):
    """(mean, covariance) of features (N, D)."""
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T)


def class_fid(gen_feats, gen_labels, ref_stats):
    """Fréchet distance per requested class between generated features and that class's reference, averaged."""
    dists = [frechet_distance(*feature_stats(gen_feats[gen_labels == c]), *ref_stats[c])
             for c in torch.unique(gen_labels).tolist() if (gen_labels == c).sum() > 1]
    return float(np.mean(dists))


def knn_distance(gen_feats, gen_labels, ref_feats, ref_labels):
    """Mean over generated samples of the smallest squared L2 distance to a reference sample of its class."""
    mins = []
    for c in torch.unique(gen_labels).tolist():
        g, r = gen_feats[gen_labels == c].double(), ref_feats[ref_labels == c].double()
        if len(g) and len(r):
            mins.append(torch.cdist(g, r).min(1).values.pow(2))
    return torch.cat(mins).mean().item()


def nearest_distances(gen_feats, ref_feats, chunk=2000):
    """For each generated sample (n, d), the L2 distance to the nearest reference sample (any class): (n,) float64."""
    g = gen_feats.double()
    best = torch.full((len(g),), float("inf"), dtype=torch.float64)
    for i in range(0, len(ref_feats), chunk):
        best = torch.minimum(best, torch.cdist(g, ref_feats[i:i + chunk].double()).min(1).values)
    return best


def nearest_distance(gen_feats, ref_feats, chunk=2000):
    """Mean over generated samples of the smallest squared L2 distance to any reference sample (any class)."""
    return nearest_distances(gen_feats, ref_feats, chunk).pow(2).mean().item()


def scalar_metrics(m):
    """The metrics without their per-class lists."""
    return {k: v for k, v in m.items() if not k.startswith("per_class")}


def wilson_interval(successes, n, z=1.959964):
    """Wilson score interval (95 % by default) of a binomial proportion: (low, high); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
