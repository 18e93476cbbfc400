"""The provider's defences against model inversion: one entry per defence, its strength, network and training.

    none                 plain cross-entropy (the article)
    label_smoothing_neg  negative label smoothing with Struppek et al.'s schedule (strength: the final alpha < 0)
    dp_sgd               DP-SGD through Opacus' PrivacyEngine (strength: target epsilon at delta = 1e-5)
    mid                  MID's variational bottleneck on the penultimate features (strength: beta)
    bido                 BiDO-HSIC on the hidden layers (strength: lambda_x; lambda_y = 10 lambda_x)

What each does, and the literature values it follows: docs/defences.md.
"""
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import bf_mnist as bfm
from attacklab.data import to_unit
from attacklab.runtime import progress

# name -> (what the strength is, its default, the rule it must obey, the rule in words)
DEFENCES = {
    "none": (None, None, lambda s: s is None, "none takes no --defence_strength"),
    "label_smoothing_neg": ("alpha", -0.05, lambda s: s < 0, "the final smoothing factor alpha, below 0 (e.g. -0.05)"),
    "dp_sgd": ("epsilon", 8.0, lambda s: s > 0, "the target epsilon at delta = 1e-5, above 0 (e.g. 8)"),
    "mid": ("beta", 0.01, lambda s: s > 0, "the bottleneck's KL weight beta, above 0 (e.g. 0.01)"),
    "bido": ("lambda_x", 0.05, lambda s: s > 0, "the input-dependence weight lambda_x, above 0 (e.g. 0.05)"),
}
STRENGTH_HELP = "the defence's strength (default: its own): " + "; ".join(
    f"{k}: {rule}" for k, (_, _, _, rule) in DEFENCES.items() if k != "none")
DP_DELTA = 1e-5
DP_MAX_GRAD_NORM = 1.0  # Opacus' MNIST example clips per-sample gradients at 1.0
BIDO_Y_OVER_X = 10.0  # BiDO-HSIC's published pairs (0.05, 0.5) on CelebA, lambda_y = 10 lambda_x
BIDO_SIGMA = 5.0  # the Gaussian kernel's width in BiDO's code
SMOOTHING_FULL_AT = 0.75  # the share of training after which negative smoothing is at its final alpha


def defence_strength(flags):
    """The run's strength: --defence_strength, else the defence's default (old runs: their --smoothing)."""
    if flags.get("defence_strength") is not None:
        return flags["defence_strength"]
    if flags["defence"] == "label_smoothing_neg" and flags.get("smoothing") is not None:
        return flags["smoothing"]
    return DEFENCES[flags["defence"]][1]


def strength_error(defence, strength):
    """One sentence when strength does not suit defence, else None."""
    _, _, valid, rule = DEFENCES[defence]
    if defence == "none":
        return None if strength is None else f"--defence_strength {strength}: {rule}; drop it or pick a --defence"
    if strength is not None and not valid(strength):
        return f"--defence {defence} --defence_strength {strength}: it is {rule}"
    return None


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------

class BottleneckTarget(bfm.TargetModel):
    """The article's target with MID's bottleneck: features (4c,) -> mean and spread (k each) -> sample -> output."""

    def __init__(self, base_channel=32, n_classes=bfm.N_CLASSES):
        super().__init__(base_channel, n_classes)
        c = base_channel
        self.k = 2 * c  # half the features, as MID's networks (feat_dim // 2)
        self.main[-1] = nn.Identity()  # the article's last layer gives way to the bottleneck
        self.statistics = nn.Linear(4 * c, 2 * self.k)  # (2k,)
        self.head = nn.Linear(self.k, n_classes)  # (n_classes,)

    def encode(self, x):
        """(mean, spread) of the code, each (N, k); the spread as MID computes it (softplus of raw - 5)."""
        mu, raw = self.statistics(super().forward(x)).chunk(2, dim=1)
        return mu, F.softplus(raw - 5)

    def forward(self, x):
        """Training: a sampled code; evaluation (the API): the mean code, so an answer does not change between queries."""
        mu, std = self.encode(x)
        return self.head(mu + std * torch.randn_like(std) if self.training else mu)


def target_network(defence, n_classes, base_channel=32):
    """The provider's network for defence: the article's, or with MID's bottleneck."""
    cls = BottleneckTarget if defence == "mid" else bfm.TargetModel
    return cls(base_channel=base_channel, n_classes=n_classes)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

def smoothing_schedule(alpha, progress_fraction):
    """Struppek et al.'s schedule as a fraction of training: 0 for the first half, a ramp, alpha from 3/4 on.

    Their code (100 epochs): 0 before epoch 50, alpha * (epoch + 1 - 50) / 50 up to epoch 74, alpha from 75.
    """
    if progress_fraction < 0.5:
        return 0.0
    if progress_fraction < SMOOTHING_FULL_AT:
        return alpha * (progress_fraction - 0.5) / 0.5
    return alpha


def selectable(flags, epoch):
    """Whether the target after `epoch` may be kept as the best by val: with smoothing, only once it is at its final alpha.

    Best-by-val would otherwise keep an early epoch trained before the schedule started: no defence at all.
    """
    if flags["defence"] == "label_smoothing_neg":
        return epoch >= SMOOTHING_FULL_AT * flags["epochs_target_model"]
    return True


class ScheduledSmoothing:
    """Cross-entropy against (1 - a) one-hot + a / k, a = smoothing_schedule(alpha, step / total_steps); one call = one step."""

    def __init__(self, alpha, total_steps, step=0):
        self.alpha, self.total_steps, self.step = alpha, total_steps, step
        self.last_alpha = 0.0

    def __call__(self, logits, y):
        a = smoothing_schedule(self.alpha, self.step / self.total_steps)
        self.step, self.last_alpha = self.step + 1, a
        k = logits.shape[1]
        target = (1 - a) * F.one_hot(y, k).to(logits.dtype) + a / k
        return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def mid_loss(model, x, y, beta):
    """Cross-entropy of a sampled code plus beta times the code's KL to N(0, I): (loss, logits, terms)."""
    mu, std = model.encode(x)  # (N, k) each
    logits = model.head(mu + std * torch.randn_like(std))
    kl = -0.5 * (1 + 2 * std.log() - mu.pow(2) - std.pow(2)).sum(1).mean()
    return F.cross_entropy(logits, y) + beta * kl, logits, {"kl": kl.item()}


def gaussian_gram(x, sigma):
    """Centred Gaussian Gram matrix of rows x (N, d), width sigma^2 * d as in BiDO's code."""
    d2 = torch.cdist(x, x).pow(2)
    k = torch.exp(-d2 / (2 * sigma * sigma * x.shape[1]))
    return k - k.mean(dim=1, keepdim=True)  # K H


def hsic_cca(kx, ky, eps=1e-5):
    """BiDO's normalised HSIC of two centred Gram matrices: sum(Rx * Ry^T), R = K (K + eps m I)^-1."""
    m = kx.shape[0]
    eye = torch.eye(m, dtype=kx.dtype, device=kx.device)
    rx = kx @ torch.linalg.inv(kx + eps * m * eye)
    ry = ky @ torch.linalg.inv(ky + eps * m * eye)
    return (rx * ry.T).sum()


def bido_loss(model, x, y, lambda_x):
    """Cross-entropy + lambda_x sum HSIC(x, h) - 10 lambda_x sum HSIC(y, h) over the hidden layers: (loss, logits, terms)."""
    hiddens, logits = model.hiddens(x)
    n = x.shape[0]
    kx = gaussian_gram(x.reshape(n, -1), BIDO_SIGMA)
    y1 = F.one_hot(y, logits.shape[1]).to(x.dtype)
    ky = y1 @ y1.T
    ky = ky - ky.mean(dim=1, keepdim=True)  # linear kernel on the labels, as BiDO-HSIC's default
    grams = [gaussian_gram(h.reshape(n, -1), BIDO_SIGMA) for h in hiddens]
    hx, hy = sum(hsic_cca(kh, kx) for kh in grams), sum(hsic_cca(kh, ky) for kh in grams)
    loss = F.cross_entropy(logits, y) + lambda_x * hx - BIDO_Y_OVER_X * lambda_x * hy
    return loss, logits, {"hsic_x": hx.item(), "hsic_y": hy.item()}


def model_loss(flags):
    """MID's or BiDO's loss (they read the network's insides), else None (the loss reads only the logits)."""
    strength = defence_strength(flags)
    if flags["defence"] == "mid":
        return lambda model, x, y: mid_loss(model, x, y, strength)
    if flags["defence"] == "bido":
        return lambda model, x, y: bido_loss(model, x, y, strength)
    return None


# ---------------------------------------------------------------------------
# DP-SGD
# ---------------------------------------------------------------------------

class _Layerwise(nn.Module):
    """The target's layers called one by one: Opacus computes per-sample gradients from each layer's hooks."""

    def __init__(self, target):
        super().__init__()
        self.main = target.main  # the same parameters: training this trains the target

    def forward(self, x):
        return self.main(x)


def train_dp_sgd(model, train, val, flags, device, epsilon, max_batches=None, on_epoch=None):
    """Train model with DP-SGD (Opacus, the article's Adam, Poisson batches of --batch_size on average).

    The noise is chosen by Opacus for epsilon at DP_DELTA after --epochs_target_model epochs; the epsilon
    reported is its RDP accountant's for the steps actually taken. on_epoch(epoch, loss, acc, seconds) is
    called after each epoch (it may keep the best model). Returns the privacy report for results.json.
    """
    from opacus.validators import ModuleValidator  # imported here: only DP-SGD runs need Opacus
    from torch.utils.data import DataLoader, TensorDataset

    net = _Layerwise(model).to(device)
    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise RuntimeError(f"Opacus cannot train the target: {errors}")
    loader = DataLoader(TensorDataset(*train), batch_size=flags["batch_size"], shuffle=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # seeded runs are the point here
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # images need no gradient
        report = _dp_epochs(net, model, loader, flags, device, epsilon, max_batches, on_epoch)
    return report


def _dp_epochs(net, model, loader, flags, device, epsilon, max_batches, on_epoch):
    """train_dp_sgd's loop, with Opacus' engine around the layerwise net: the privacy report."""
    from opacus import PrivacyEngine
    engine = PrivacyEngine(accountant="rdp")
    net, optimizer, loader = engine.make_private_with_epsilon(
        module=net, optimizer=torch.optim.Adam(net.parameters()), data_loader=loader, target_epsilon=epsilon,
        target_delta=DP_DELTA, epochs=flags["epochs_target_model"], max_grad_norm=DP_MAX_GRAD_NORM)
    for epoch in range(1, flags["epochs_target_model"] + 1):
        t0, net = time.time(), net.train()
        total, correct, seen = 0.0, 0, 0
        for i, (xb, yb) in enumerate(progress(loader, f"target {epoch} (DP-SGD)")):
            if max_batches and i >= max_batches:
                break
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            x, y = to_unit(xb).to(device), yb.to(device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, correct, seen = total + loss.item() * len(y), correct + (logits.argmax(1) == y).sum().item(), seen + len(y)
        if on_epoch is not None:
            on_epoch(epoch, total / max(seen, 1), correct / max(seen, 1), time.time() - t0)
    net.remove_hooks()  # the target goes on without Opacus' hooks and per-sample gradients
    for p in model.parameters():
        p.grad_sample = None
    return {"epsilon": engine.get_epsilon(DP_DELTA), "target_epsilon": epsilon, "delta": DP_DELTA,
            "noise_multiplier": optimizer.noise_multiplier, "max_grad_norm": DP_MAX_GRAD_NORM,
            "sample_rate": loader.sample_rate, "accountant": "rdp",
            "steps": sum(steps for _, _, steps in engine.accountant.history)}
