"""G's auxiliary objectives and the surrogate's class weights: functions of tensors, no state."""
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


def per_class_mmd2(real, fake, asked, scales, linear=0.0):
    """Sum over the asked classes c of (share of c) * MMD^2(real batch, G's images of class c), labels ignored.

    Each class's samples are compared with the whole real batch, so a class drawn as one shape is as far
    from it as a collapsed G is; the set MMD (all of G's batch at once) lets five classes be five shapes.
    """
    loss = fake.new_zeros(())
    for c in asked.unique():
        mine = fake[asked == c]  # (n_c, 1, H, W)
        same = torch.zeros(len(real) + len(mine), dtype=torch.long, device=real.device)
        loss = loss + len(mine) / len(fake) * conditional_mmd2(real, mine, same[:len(real)], same[len(real):],
                                                               scales, linear)
    return loss


def patches(images, labels, size, count, generator=None):
    """`count` random size x size patches (stride size // 2) of a batch (N, 1, H, W): (count, size²), their labels."""
    cols = F.unfold(images, size, stride=max(1, size // 2))  # (N, size * size, P)
    flat = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N * P, size * size)
    flat_labels = labels.repeat_interleave(cols.shape[2])
    pick = torch.randperm(len(flat), generator=generator, device=images.device)[:count]
    return flat[pick], flat_labels[pick]


def mode_seeking_loss(fake, noise, asked):
    """1 / (mean over same-class pairs of |G(z1, c) - G(z2, c)| / |z1 - z2|), per-pixel and per-entry L1.

    The mode-seeking term of MSGAN (Mao et al., CVPR 2019), computed on the pairs of one batch that
    were asked for the same class: it grows when two noises give the same image (a class collapsed
    to one shape). 0 when no two samples share a class.
    """
    images, z = fake.flatten(1), noise.flatten(1)  # (n, pixels), (n, nz)
    same = (asked[:, None] == asked[None, :]) & ~torch.eye(len(asked), dtype=torch.bool, device=asked.device)
    if not same.any():
        return fake.new_zeros(())
    ratio = (torch.cdist(images, images, p=1) / images.shape[1])[same] / (torch.cdist(z, z, p=1) / z.shape[1])[same]
    return 1.0 / (ratio.mean() + 1e-5)


def class_weights(targets, n_classes):
    """Cross-entropy weights n / (k * count_c) from labels (N,) or soft targets (N, k): every class counts equally."""
    counts = (torch.bincount(targets, minlength=n_classes).float() if targets.dim() == 1
              else targets.float().sum(0))
    return len(targets) / (n_classes * counts.clamp(min=1.0))


def training_done(recipe):
    """The share of all GAN steps done before this one, from the recipe's epoch/epochs and step/steps."""
    epoch, epochs = recipe.get("epoch", 1), recipe.get("epochs", 1)
    return (epoch - 1 + recipe.get("step", 0) / recipe.get("steps", 1)) / epochs


def surrogate_loss(surrogate, fake, asked, recipe):
    """The surrogate's cross-entropy for the asked classes on G's images: shifted, then rotated and rescaled, partly
    hidden and noised if the recipe says (a new draw per image and call)."""
    seen = (translate(fake, recipe["surrogate_translate"]) + 1) / 2  # the API's [0, 1] scale
    if recipe["surrogate_affine"][0] > 0 or recipe["surrogate_affine"][1] > 0:
        seen = random_affine(seen, *recipe["surrogate_affine"])
    if recipe["surrogate_cutout"] > 0 and training_done(recipe) < recipe["surrogate_cutout_until"]:
        # G must hold class c with any part hidden: every part must say c
        cut = random_cutout(seen, recipe["surrogate_cutout"])
        share = recipe["surrogate_cutout_share"]  # < 1: only that share of the images (drawn anew each call)
        seen = cut if share >= 1 else torch.where(torch.rand(len(seen), 1, 1, 1, device=seen.device) < share, cut, seen)
    if recipe["surrogate_noise"] > 0:  # G must hold class c under noise: far from the boundaries
        seen = seen + recipe["surrogate_noise"] * torch.randn_like(seen)
    if recipe["surrogate_floor"] == 0:
        return F.cross_entropy(surrogate(seen), asked)
    # an image already that sure of c is not pushed further (the rest of G's loss shapes it)
    per_image = F.cross_entropy(surrogate(seen), asked, reduction="none")  # (N,)
    return (per_image - recipe["surrogate_floor"]).clamp(min=0).mean()
