"""Drawing from a generator: fixed noise, the requested labels of a grid, images in [0, 1], and G's running average."""
import torch

from attacklab.data import N_CLASSES, one_hot


def generator_images(g, labels, noise, rescale=True, batch_size=500, n_classes=N_CLASSES):
    """Images in [0, 1] that G draws for the requested labels, in eval mode (rescale: Tanh's [-1, 1] -> [0, 1])."""
    was_training = g.training
    g.eval()
    device = noise.device
    out = []
    with torch.inference_mode():
        for i in range(0, len(labels), batch_size):
            x = g(noise[i:i + batch_size], one_hot(labels[i:i + batch_size].to(device), n_classes))
            out.append(((x + 1) / 2 if rescale else x).clamp_(0, 1).cpu())
    g.train(was_training)
    return torch.cat(out)


def fixed_noise(n, nz, seed, device):
    """Noise that depends on the seed alone (not on the global RNG), for comparable pictures and metrics."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, nz, 1, 1, generator=gen).to(device)


def grid_labels(per_class, n_classes=N_CLASSES):
    """0,0,...,1,1,...: per_class requests of each class in order (row r of a grid is class r)."""
    return torch.arange(n_classes).repeat_interleave(per_class)
