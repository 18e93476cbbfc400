"""G's auxiliary objectives: functions of tensors, no state."""
import torch
import torch.nn.functional as F

from attacklab.data import random_affine, random_cutout, translate


def conditional_mmd2(a, b, labels_a, labels_b, scales, linear=0.0):
    """Squared MMD between (image, label) samples: zero when the two labelled sets are equal in distribution.

    Kernel: (sum over scales s of exp(-||x - x'||^2 / (D s)) + linear * <x, x'> / D) * 1[y = y'], D = pixels.
    The linear part matches each class's mean image, which removes fixed patterns (such as a
    transposed convolution's checkerboard) far faster than the Gaussian parts alone.
    """
    x = torch.cat([a.flatten(1), b.flatten(1)])
    y = torch.cat([labels_a, labels_b])
    d2 = torch.cdist(x, x).pow(2) / x.shape[1]  # mean squared pixel difference
    k = sum(torch.exp(-d2 / s) for s in scales)
    if linear:
        k = k + linear * (x @ x.T) / x.shape[1]
    k = k * (y[:, None] == y[None, :]).float()
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def surrogate_loss(surrogate, fake, asked, recipe):
    """The surrogate's cross-entropy for the asked classes on G's images: shifted, then rotated and rescaled, partly
    hidden and noised if the recipe says (a new draw per image and call)."""
    seen = (translate(fake, recipe["surrogate_translate"]) + 1) / 2  # the API's [0, 1] scale
    if recipe["surrogate_affine"][0] > 0 or recipe["surrogate_affine"][1] > 0:
        seen = random_affine(seen, *recipe["surrogate_affine"])
    if recipe["surrogate_cutout"] > 0:  # G must hold class c with any part hidden: every part must say c
        seen = random_cutout(seen, recipe["surrogate_cutout"])
    if recipe["surrogate_noise"] > 0:  # G must hold class c under noise: far from the boundaries
        seen = seen + recipe["surrogate_noise"] * torch.randn_like(seen)
    return F.cross_entropy(surrogate(seen), asked)
