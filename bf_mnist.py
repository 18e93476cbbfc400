"""The article's networks and the inversion's training functions: both GAN variants, their recipes, MMD.

Everything else (data, the provider's API, the metrics, the run's stages) is in the attacklab
package beside this file. Nothing happens at import.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacklab.api import as_labels
from attacklab.classifiers import adam, shift_2px, train_classifier_epoch
from attacklab.data import N_CLASSES, batch_indices, one_hot, to_unit, translate
from attacklab.losses import conditional_mmd2, surrogate_loss
from attacklab.runtime import progress, retired_error, seeded_fork

# ---------------------------------------------------------------------------
# networks (shapes as in the article; comments give one sample's shape)
# ---------------------------------------------------------------------------

class TargetModel(nn.Module):
    """The provider's classifier f, as in the article: no activation functions at all."""

    def __init__(self, base_channel=32, n_classes=N_CLASSES):
        super().__init__()
        c = base_channel
        self.main = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=3),  # (c, 26, 26)
            nn.Conv2d(c, 2 * c, kernel_size=3),  # (2c, 24, 24)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (2c, 12, 12)
            nn.Dropout2d(),
            nn.Flatten(),  # (2c * 144,)
            nn.Linear(2 * c * 12 * 12, 4 * c),  # (4c,)
            # The article used Dropout2d here, on 2-D features, where it drops whole samples;
            # element-wise dropout with the same p is what it meant (identical in eval mode).
            nn.Dropout(),
            nn.Linear(4 * c, n_classes),  # (10,)
        )

    def forward(self, x):
        """The article's function, with its two convolutions computed as one 5x5 convolution.

        Nothing lies between them, so conv2(conv1(x)) = conv(x, K) + b exactly in real arithmetic
        (K = W2 composed with W1, b = b2 + sum W2 * b1): 1/10 of the multiply-adds, gradients still
        flow to W1, b1, W2, b2. Float rounding differs from layerwise(): logits agree to ~1e-7.
        """
        return self.main[2:](self.fused_convolutions(x))

    def fused_convolutions(self, x):
        """conv2(conv1(x)) as one 5x5 convolution: (2c, 24, 24)."""
        conv1, conv2 = self.main[0], self.main[1]
        kernel = F.conv_transpose2d(conv2.weight, conv1.weight)  # (2c, 1, 5, 5)
        bias = conv2.bias + conv2.weight.sum((2, 3)) @ conv1.bias  # (2c,)
        return F.conv2d(x, kernel, bias)

    def layerwise(self, x):
        """The article's forward, layer by layer (the benchmark's baseline)."""
        return self.main(x)

    def hiddens(self, x):
        """([pooled convolutions (2c, 12, 12), features (4c,)], logits) along forward's path (BiDO reads them)."""
        pooled = self.main[2](self.fused_convolutions(x))  # (2c, 12, 12)
        features = self.main[5](self.main[4](self.main[3](pooled)))  # (4c,)
        return [pooled, features], self.main[7](self.main[6](features))


class Generator(nn.Module):
    """G(z, y): z (nz, 1, 1) and a one-hot y (10,) -> an image (1, 28, 28) in [-1, 1]."""

    def __init__(self, input_dim=100, base_channel=32, n_classes=N_CLASSES, label_dim=1000):
        super().__init__()
        c = base_channel
        self.base_channel = base_channel
        self.block1 = nn.Sequential(
            nn.ConvTranspose2d(input_dim, c, 4, 1, 0, bias=False),  # (c, 4, 4)
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.block2 = nn.Sequential(nn.Linear(n_classes, label_dim), nn.ReLU(inplace=True))  # (1000,)
        self.concat_block = nn.Linear(c * 4 * 4 + label_dim, c * 4 * 4)  # (c*16,) -> viewed (c, 4, 4)
        self.main = nn.Sequential(
            nn.ConvTranspose2d(c, 4 * c, 3, 2, 1, bias=False),  # (4c, 7, 7)
            nn.BatchNorm2d(4 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1, bias=False),  # (2c, 14, 14)
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, 1, 4, 2, 1, bias=False),  # (1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z, y_onehot):
        h = self.block1(z).flatten(1)  # (c*16,)
        e = self.block2(y_onehot.flatten(1))  # (1000,)
        h = self.concat_block(torch.cat([h, e], dim=1))  # (c*16,)
        return self.main(h.view(-1, self.base_channel, 4, 4))


class Discriminator(nn.Module):
    """D(x, y): an image (1, 28, 28) and a one-hot y (10,) -> one logit."""

    def __init__(self, base_channel=32, n_classes=N_CLASSES, label_dim=1000):
        super().__init__()
        c = base_channel
        self.base_channel = base_channel
        self.block1 = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1, bias=False),  # (c, 14, 14)
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.block2 = nn.Sequential(nn.Linear(n_classes, label_dim), nn.ReLU(inplace=True))  # (1000,)
        self.concat_block = nn.Linear(c * 14 * 14 + label_dim, c * 14 * 14)  # (c*196,) -> (c, 14, 14)
        self.main = nn.Sequential(
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),  # (2c, 7, 7)
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False),  # (4c, 3, 3)
            nn.BatchNorm2d(4 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 1, 4, 2, 1, bias=False),  # (1, 1, 1)
        )

    def forward(self, x, y_onehot):
        h = self.block1(x).flatten(1)  # (c*196,)
        e = self.block2(y_onehot.flatten(1))  # (1000,)
        h = self.concat_block(torch.cat([h, e], dim=1))  # (c*196,)
        return self.main(h.view(-1, self.base_channel, 14, 14)).view(-1)  # (,) one logit per sample


class SurrogateClassifier(nn.Module):
    """The attacker's stand-in for the API: trained on the auxiliary images and the labels the API gave them.

    The attacker sees labels only, so it cannot differentiate the target; it differentiates this
    copy instead (a label-only attack's knowledge transfer: Nguyen et al., "Label-Only Model
    Inversion Attacks via Knowledge Transfer", NeurIPS 2023). A LeNet-style ReLU CNN with dropout:
    unlike the target (no activations) and unlike the evaluator (BatchNorm, four convolutions).
    """

    def __init__(self, n_classes=N_CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (32, 14, 14)
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (64, 7, 7)
            nn.Flatten(),  # (3136,)
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),  # (128,)
            nn.Dropout(0.3),
            nn.Linear(128, n_classes),  # (10,)
        )

    def forward(self, x):
        return self.net(x)


class SurrogateEnsemble(nn.Module):
    """Several surrogates as one classifier: the mean of their log-probabilities (a class all of them must give)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x).log_softmax(1) for m in self.members]).mean(0)


# ---------------------------------------------------------------------------
# the two variants' settings, side by side (README: what each row changes; docs/: how they were found)
# ---------------------------------------------------------------------------

_RECIPE_ROWS = [
    # key                       blog (the article)   corrected (this project)
    ("batch_size",              None,                64),      # None: --batch_size (200), as the article
    ("lr_g",                    1e-4,                1e-3),
    ("lr_d",                    4e-4,                2e-4),
    ("betas_g",                 [0.5, 0.9],          [0.5, 0.999]),
    ("betas_d",                 [0.0, 0.9],          [0.5, 0.999]),
    ("lr_decay",                None,                "linear"),  # lr * (1 - (epoch - 1) / epochs); or "linear_step"
    ("random_real_targets_until", 50,                0),       # iterations 1..49 of each epoch: U[0, 1) targets
    ("real_label",              1.0,                 1.0),
    ("adv_weight",              1.0,                 0.1),     # non-saturating GAN loss in G's objective
    ("mmd_weight",              0.0,                 10.0),    # class-conditional MMD to the real batch
    ("mmd_scales",              None,                [0.1, 0.3, 1.0, 3.0]),
    ("mmd_linear",              0.0,                 1.0),
    ("translate",               0,                   3),       # DiffAugment shift of what D sees, px
    ("surrogate_weight",        0.0,                 1.0),     # the surrogate's cross-entropy for G
    ("surrogate_epochs",        0,                   3),
    ("surrogate_translate",     0,                   2),
    ("surrogate_noise",         0.0,                 0.0),     # std of Gaussian noise on what the surrogate sees
    ("surrogate_models",        1,                   1),       # how many surrogates (seeds) G must satisfy at once
    ("surrogate_affine",        [0, 0.0],            [0, 0.0]),  # what the surrogate sees rotated (deg), scaled
    ("surrogate_cutout",        0,                   0),       # side of a square hidden from the surrogate, px
    ("fake_labels",             "aux",               "aux"),   # classes asked of G: the aux batch's, or "uniform"
    ("d_conditional",           True,                True),    # False: D judges realism only, never the label
    ("mmd_conditional",         True,                True),    # False: MMD between G's batch and the aux batch as sets
]
# Entries tried and not adopted, with the value that switched each off (None: any value, it mattered only with
# another entry on): they left the code after commit RETIRED_AT (or the commit given for the entry in
# RETIRED_LATER); docs/dead_ends.md keeps their results and how to rerun them there.
RETIRED_ENTRIES = {"mmd_patch": 0, "mmd_per_class": False, "surrogate_cutout_share": 1.0, "surrogate_cutout_until": 1.0,
                   "surrogate_floor": 0.0, "surrogate_balance": False, "mode_seeking": 0.0, "refit_queries": 0,
                   "refit_epochs": 0, "g_average": 0.0, "g_slots": 1, "refit_rounds": 0, "refit_images": None,
                   "tv_weight": 0.0, "generator": "dcgan", "own_weight": 0.0}
RETIRED_AT = "8a51da0"
RETIRED_LATER = {"refit_rounds": "5375e33", "refit_images": "5375e33", "tv_weight": "947127b", "generator": "56333e9",
                 "own_weight": "85a19a8"}


def retired_entry_error(key):
    """One sentence for a recipe entry that has left the code."""
    return retired_error(f"the recipe entry {key!r}", RETIRED_LATER.get(key, RETIRED_AT))


# What a protocol changes in the corrected recipe. When the attacker's images are not of the private
# classes, an image the API calls c is not a c: D and the MMD judge realism only, G is asked for every
# class equally, the data prior is weaker and the surrogate's signal stronger. Disjoint digits: the
# surrogate also sees G's image plus noise: G must draw images that stay c when perturbed, far from the
# boundaries where 5-9 shapes lie, and rotated (up to 45 degrees) and rescaled (up to 20%): G must draw
# a shape that stays c from any of those views and with a 14 x 14 square hidden, under an MMD of weight 4;
# learning rates decay per step (one epoch; docs/disjoint.md). Letters keep what they were measured with.
_FOREIGN_AUX = {"fake_labels": "uniform", "d_conditional": False, "mmd_conditional": False, "mmd_weight": 2.0,
                "surrogate_weight": 3.0}
PROTOCOL_RECIPE = {"same": {}, "disjoint": {**_FOREIGN_AUX, "surrogate_weight": 5.0, "surrogate_noise": 0.3,
                                             "lr_decay": "linear_step", "surrogate_affine": [45, 0.2],
                                             "surrogate_cutout": 14, "mmd_weight": 4.0},
                   "letters": _FOREIGN_AUX}
VARIANTS = ("corrected", "blog")


def default_recipe(variant="corrected", protocol="same"):
    """A fresh copy of one variant's settings (a column of the table above), adjusted for the protocol."""
    column = 1 if variant == "blog" else 2
    recipe = {row[0]: (list(row[column]) if isinstance(row[column], list) else row[column]) for row in _RECIPE_ROWS}
    return {**recipe, **(PROTOCOL_RECIPE[protocol] if variant == "corrected" else {})}


def make_gan_optimizers(g, d, recipe):
    """Adam for G and D with the recipe's learning rates and betas."""
    return (adam(g.parameters(), lr=recipe["lr_g"], betas=tuple(recipe["betas_g"])),
            adam(d.parameters(), lr=recipe["lr_d"], betas=tuple(recipe["betas_d"])))


def set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, epochs, step=0, steps=1):
    """Both learning rates at this step: constant, or decaying linearly to 0 per epoch or per step.

    "linear": lr * (1 - (epoch - 1) / epochs) for the whole epoch; "linear_step": lr * (1 - t), t the
    fraction of all steps done, (epoch - 1 + step / steps) / epochs. A function of where training
    is alone, so a resumed run sets exactly what an uninterrupted one had.
    """
    done = {"linear": (epoch - 1) / epochs, "linear_step": (epoch - 1 + step / steps) / epochs}
    factor = 1.0 - done.get(recipe.get("lr_decay"), 0.0)
    for opt, lr in ((opt_g, recipe["lr_g"]), (opt_d, recipe["lr_d"])):
        for group in opt.param_groups:
            group["lr"] = lr * factor


def g_loss_through_frozen_d(d, fake, y_onehot):
    """Non-saturating generator loss -log D(fake, y) with D's weights frozen: no weight gradients for D."""
    d.requires_grad_(False)
    try:
        out = d(fake, y_onehot)
    finally:
        d.requires_grad_(True)
    return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))


# ---------------------------------------------------------------------------
# one GAN epoch of each variant: gan_epoch(g, d, opt_g, opt_d, aux_images, aux_labels, recipe, device, nz,
# api=None, surrogate=None, max_batches=None) -> (mean G loss, mean D loss)
# ---------------------------------------------------------------------------

def gan_epoch_blog(g, d, opt_g, opt_d, aux_images, aux_labels, recipe, device, nz, api=None, surrogate=None,
                   max_batches=None):
    """One epoch of the article's algorithm, defects kept.

    Reals stay in [0, 1] against Tanh fakes, D judges a fake with the API's label of that fake,
    reals get uniform random targets while the per-epoch counter is below 50, and D is
    stepped on even iterations only (its loss is logged where it is computed).
    """
    g.train()
    d.train()
    losses_g, losses_d = [], []
    warmup = recipe["random_real_targets_until"]
    batches = batch_indices(len(aux_images), recipe["batch_size"], True, max_batches)
    for it, idx in enumerate(progress(batches, "gan(blog)"), start=1):
        real = to_unit(aux_images[idx]).to(device, non_blocking=True)
        y_real = one_hot(aux_labels[idx].to(device, non_blocking=True))
        n = len(idx)
        if it % 2 == 0:
            # D step: maximise log D(x', f(x')) + log(1 - D(G(z, y), f(G(z, y))))
            target_real = torch.rand(n, device=device) if it < warmup else torch.ones(n, device=device)
            z = torch.randn(n, nz, 1, 1, device=device)
            with torch.no_grad():
                fake = g(z, y_real)
            y_fake = one_hot(as_labels(api(fake)))  # the defect: f's label of the fake, not y
            loss_d = (F.binary_cross_entropy_with_logits(d(real, y_real), target_real)
                      + F.binary_cross_entropy_with_logits(d(fake, y_fake), torch.zeros(n, device=device)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses_d.append(loss_d.item())
        else:
            # D is not stepped on odd iterations, but the article still draws these random numbers
            # and runs G in train mode on the fake (which moves G's BatchNorm running statistics)
            if it < warmup:
                torch.rand(n, device=device)
            with torch.no_grad():
                g(torch.randn(n, nz, 1, 1, device=device), y_real)
        # G step: minimise -log D(G(z, y), f(G(z, y)))
        fake = g(torch.randn(n, nz, 1, 1, device=device), y_real)
        loss_g = g_loss_through_frozen_d(d, fake, one_hot(as_labels(api(fake.detach()))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses_g.append(loss_g.item())
    return float(np.mean(losses_g)), float(np.mean(losses_d)) if losses_d else float("nan")


def gan_epoch_corrected(g, d, opt_g, opt_d, aux_images, aux_labels, recipe, device, nz, api=None, surrogate=None,
                        max_batches=None):
    """One epoch of the corrected attack; the API is not queried here at all.

    Reals are scaled to [-1, 1] like G's Tanh output; D judges (G(z, y), y), y the API's labels of the aux
    batch, on randomly translated images (DiffAugment). G minimises corrected_g_loss, told where training
    is (recipe's epoch/epochs, and step/steps).
    """
    g.train()
    d.train()
    losses_g, losses_d = [], []
    shift = recipe["translate"]
    batches = batch_indices(len(aux_images), recipe["batch_size"], True, max_batches)
    for step, idx in enumerate(progress(batches, "gan(corrected)")):
        if recipe["lr_decay"] == "linear_step":
            set_epoch_learning_rates(opt_g, opt_d, recipe, recipe["epoch"], recipe["epochs"], step, len(batches))
        real = to_unit(aux_images[idx]).to(device, non_blocking=True).mul_(2).sub_(1)
        labels = aux_labels[idx].to(device, non_blocking=True)
        n = len(idx)
        # the classes G is asked for: the API's labels of the real batch, or each class equally often
        asked = labels if recipe["fake_labels"] == "aux" else torch.randint(0, recipe["n_classes"], (n,), device=device)
        y = one_hot(asked)
        y_d = torch.cat([one_hot(labels), y]) if recipe["d_conditional"] else torch.zeros(2 * n, N_CLASSES, device=device)
        # D step: maximise log D(x', f(x')) + log(1 - D(G(z, y), y)); reals and fakes in one batch,
        # so D's 46M-weight layer is read once
        with torch.no_grad():
            fake = g(torch.randn(n, nz, 1, 1, device=device), y)
        out = d(translate(torch.cat([real, fake]), shift), y_d)
        loss_d = (F.binary_cross_entropy_with_logits(out[:n], torch.full_like(out[:n], recipe["real_label"]))
                  + F.binary_cross_entropy_with_logits(out[n:], torch.zeros_like(out[n:])))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        losses_d.append(loss_d.item())
        # G step: minimise corrected_g_loss
        z = torch.randn(n, nz, 1, 1, device=device)
        fake = g(z, y)
        loss_g = corrected_g_loss(d, fake, real, labels, asked, y_d[n:], dict(recipe, step=step, steps=len(batches)),
                                  surrogate)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses_g.append(loss_g.item())
    return float(np.mean(losses_g)), float(np.mean(losses_d))


def corrected_g_loss(d, fake, real, labels, asked, y_d_fake, recipe, surrogate=None):
    """G's objective: adv_weight * -log D(G(z, y), y) + mmd_weight * MMD^2((x', y), (G(z, y), y))
    + surrogate_weight * CE(surrogate(G(z, y)), y), y = asked."""
    same = recipe["mmd_conditional"]  # False: the two batches compared as sets, labels ignored
    la, lb = (labels, asked) if same else (labels * 0, asked * 0)
    loss = recipe["mmd_weight"] * conditional_mmd2(real, fake, la, lb, recipe["mmd_scales"], recipe["mmd_linear"])
    if recipe["adv_weight"] > 0:
        seen_by_d = translate(fake, recipe["translate"])
        loss = loss + recipe["adv_weight"] * g_loss_through_frozen_d(d, seen_by_d, y_d_fake)
    if surrogate is not None and recipe["surrogate_weight"] > 0:
        loss = loss + recipe["surrogate_weight"] * surrogate_loss(surrogate, fake, asked, recipe)
    return loss


GAN_EPOCH = {"blog": gan_epoch_blog, "corrected": gan_epoch_corrected}
# G's output as an image in [0, 1]: the article takes it as is (negative pixels clip); corrected maps [-1, 1].
RESCALE_OUTPUT = {"blog": False, "corrected": True}


def train_surrogate(images, labels, seed, device, epochs, batch_size=64, max_batches=None, n_classes=N_CLASSES):
    """The attacker's SurrogateClassifier fitted to (its images, the API's labels); frozen, in eval mode.

    +-2 px shifts, in a forked RNG seeded by `seed` (a run that loads it instead keeps the same random
    streams). Returns (model, last epoch's fit).
    """
    with seeded_fork(seed, device):
        model = SurrogateClassifier(n_classes).to(device).requires_grad_(True)
        optimizer = adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
        acc = float("nan")
        for epoch in range(epochs):
            _, acc = train_classifier_epoch(model, optimizer, images, labels, batch_size, device, max_batches,
                                            augment=shift_2px, desc=f"surrogate {epoch + 1}",
                                            loss_fn=F.cross_entropy)
    return model.eval().requires_grad_(False), acc
