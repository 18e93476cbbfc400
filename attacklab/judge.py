"""The held-out judge: a classifier that never saw an image the provider trained on, and what it measures.

Its network, its training loop and its cache share no code with the evaluator's (attacklab.evaluator):
another architecture (a residual block, GroupNorm, GELU, no BatchNorm), another optimiser
(SGD with Nesterov momentum, cosine schedule), another augmentation (small random rotations and
scalings). It trains on the val and test splits only, and under `same` only on the one the attacker
does not hold (docs/heldout.md).
"""
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacklab.data import CACHE_DIR, N_CLASSES, random_affine, to_unit
from attacklab.metrics import tensor_digest, wilson_interval
from attacklab.runtime import save_checkpoint, seeded_fork

JUDGE_STEPS = 1250  # about 8 epochs over val + test (20,000 images); a smaller set gets more epochs...
JUDGE_MAX_EPOCHS = 40  # ... up to this many (a tiny test set is not trained for 1,250 epochs)
JUDGE_VERSION = 1  # the training above; a cached judge of another version is trained again
JUDGE_BATCH = 128
NN_K = 5  # Naeem et al. 2020's k for density and coverage


class _Residual(nn.Module):
    """x + conv(gelu(norm(conv(gelu(norm(x)))))) at constant width."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, channels), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(8, channels), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class JudgeNet(nn.Module):
    """A small CNN with a GroupNorm/GELU residual block; its 128-d GELU feature layer serves density and coverage."""

    def __init__(self, n_classes=N_CLASSES, width=32, feature_dim=128):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, padding=2), nn.GELU(), nn.MaxPool2d(2),  # (w, 14, 14)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.GELU(), nn.MaxPool2d(2),  # (2w, 7, 7)
            _Residual(2 * w),
            nn.GroupNorm(8, 2 * w), nn.GELU(), nn.Flatten(),  # (2w * 49,)
            nn.Linear(2 * w * 49, feature_dim), nn.GELU(),  # (128,)
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def judge_splits(protocol, aux_split):
    """The splits the judge trains on: val and test, less the one the attacker holds under `same`."""
    return [s for s in ("val", "test") if not (protocol == "same" and s == aux_split)]


def train_judge_net(images, labels, seed, device, steps=JUDGE_STEPS, dry_run=False):
    """Train JudgeNet on uint8 images (N, 28, 28) and their digits for about `steps` steps (whole epochs);
    returns the model in eval mode."""
    with seeded_fork(seed, device):
        model = JudgeNet().to(device)
        steps_per_epoch = 1 if dry_run else math.ceil(len(images) / JUDGE_BATCH)
        epochs = 1 if dry_run else min(JUDGE_MAX_EPOCHS, math.ceil(steps / steps_per_epoch))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(images))
            for step in range(steps_per_epoch):
                idx = order[step * JUDGE_BATCH:(step + 1) * JUDGE_BATCH]
                x = random_affine(to_unit(images[idx]).to(device), 10, 0.1)  # (b, 1, 28, 28)
                loss = F.cross_entropy(model(x), labels[idx].to(device), label_smoothing=0.05)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def judge_outputs(model, images01, batch_size=1000):
    """(features (N, 128), predicted digits (N,)) of float images in [0, 1], on the CPU."""
    device = next(model.parameters()).device
    feats = torch.cat([model.features(images01[i:i + batch_size].to(device)).cpu()
                       for i in range(0, len(images01), batch_size)]) if len(images01) else torch.empty(0, model.head.in_features)
    return feats, model.head(feats.to(device)).argmax(1).cpu()


def judge_path(data_dir, seed, splits, dry_run=False, run_models=None):
    """Shared cache under the data folder, one file per seed and training splits (a dry run's stays in its run)."""
    name = f"judge_seed{seed}_{'_'.join(splits)}.pt"
    return Path(run_models) / name if dry_run else Path(data_dir) / CACHE_DIR / name


def load_judge(data, splits, seed, device, path, dry_run=False, log=print):
    """The judge trained on `splits` of data with this seed: from its cache when it matches, else trained now.

    Returns (model, info: seed, splits, accuracy on the train split per digit and overall).
    """
    images = torch.cat([data[s][0] for s in splits])
    labels = torch.cat([data[s][1] for s in splits])
    digest = tensor_digest(images, labels)
    path = Path(path)
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if (ckpt.get("kind") == "judge" and ckpt["seed"] == seed and ckpt["data"] == digest
                    and ckpt["info"].get("version", 1) == JUDGE_VERSION):
                model = JudgeNet()
                model.load_state_dict(ckpt["model"])
                return model.to(device).eval().requires_grad_(False), ckpt["info"]
        except Exception:
            pass  # damaged or foreign: trained again below
    log(f"training the held-out judge (seed {seed}) on {'+'.join(splits)}; it is cached at {path}")
    model = train_judge_net(images, labels, seed, device, dry_run=dry_run)
    x_train, y_train = data["train"]
    if dry_run:
        x_train, y_train = x_train[:200], y_train[:200]
    hit = (judge_outputs(model, to_unit(x_train))[1] == y_train).float()
    info = {"seed": seed, "version": JUDGE_VERSION, "trained_on": list(splits), "n_train_images": len(images),
            "accuracy_on_train_split": hit.mean().item(),
            "per_digit_accuracy_on_train_split": [hit[y_train == d].mean().item() for d in range(N_CLASSES)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint("judge", path, model=model.state_dict(), seed=seed, data=digest, info=info)
    log(f"held-out judge: accuracy {info['accuracy_on_train_split']:.4f} on the train split it never saw")
    return model, info


def density_coverage(real, fake, k=NN_K):
    """Density and coverage of fake features (M, d) against real ones (N, d) (Naeem et al., ICML 2020)."""
    if len(fake) == 0 or len(real) <= k:
        return {"density": float("nan"), "coverage": float("nan")}
    real, fake = real.double(), fake.double()
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # k-th neighbour, itself excluded: (N,)
    inside = torch.cdist(real, fake) < radii[:, None]  # (N, M): fake j in real i's ball
    return {"density": inside.sum().item() / (k * len(fake)), "coverage": inside.any(1).float().mean().item()}


def private_reference(private_train, digits, per_digit, seed=0):
    """{digit: uint8 images}: per_digit private train images of each digit, drawn with a fixed seed."""
    images, labels = private_train  # labels: the real digits
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for d in digits:
        pool = torch.nonzero(labels == d).flatten()
        out[d] = images[pool[torch.randperm(len(pool), generator=gen)[:per_digit]]]
    return out


def reference_features(model, reference):
    """{digit: judge features} of the reference images {digit: uint8 images}."""
    return {d: judge_outputs(model, to_unit(x))[0] for d, x in reference.items()}


def judge_metrics(model, images01, asked, digits, ref):
    """What the held-out judge says of images meant as the digits `asked` (N,), per digit in the order of digits.

    accuracy: judged as the asked digit; any_private: judged as any private digit; called: how many were judged
    as each digit 0-9; density and coverage of each digit's images against the private train images of that
    digit (ref: their judge features).
    """
    feats, pred = judge_outputs(model, images01)
    hit = (pred == asked).float()
    private = torch.isin(pred, torch.tensor(digits))
    per, counts = [], []
    for d in digits:
        mine = asked == d
        per.append({"accuracy": hit[mine].mean().item(), "any_private": private[mine].float().mean().item(),
                    "called": torch.bincount(pred[mine], minlength=N_CLASSES).tolist(),
                    **density_coverage(ref[d], feats[mine])})
        counts.append([int(hit[mine].sum().item()), int(mine.sum().item())])
    for p, (passed, n) in zip(per, counts):
        p["wilson95"] = list(wilson_interval(passed, n))
    mean = {key: float(np.nanmean([p[key] for p in per])) if any(p[key] == p[key] for p in per) else float("nan")
            for key in ("density", "coverage")}  # over the digits that have samples
    return {"accuracy": hit.mean().item(), "any_private": private.float().mean().item(), **mean,
            "per_digit": {str(d): p for d, p in zip(digits, per)}, "counts": counts}
