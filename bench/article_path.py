"""A faithful re-implementation of the article's data path and loops, kept only as the benchmark's baseline.

It is the article's per-step work (ImageFolder PNG loading with 2 workers, the target queried three
times per batch, D evaluated on every iteration, D's weight gradients computed in the G step and
discarded, un-fused Adam) written against this project's models, with the article's crashes fixed
(the undefined `bf` helpers, D stepped with its own optimizer) so that it runs.
"""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

import bf_mnist as bfm


def image_folder_loader(split_dir, batch_size=200, shuffle=True, num_workers=2):
    """The article's loader: PNGs decoded by PIL on every epoch, Grayscale + ToTensor, 2 workers."""
    dataset = ImageFolder(str(split_dir), transform=transforms.Compose([
        transforms.Grayscale(num_output_channels=1), transforms.ToTensor()]))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)


def train_target_batches(model, optimizer, batches, device):
    """The article's target training loop body over the given batches."""
    loss_f = nn.CrossEntropyLoss()
    model.train()
    n = n_acc = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        h = model.layerwise(x)
        loss = loss_f(h, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss = loss.item()  # noqa: F841 (the article keeps only the last batch's loss)
        n += len(x)
        n_acc += (y == h.max(1)[1]).float().sum().item()
    return n_acc / max(n, 1)


def eval_target(model, loader, device):
    """The article's evaluation: no_grad forward per batch, labels gathered, accuracy at the end."""
    model.eval()
    ys, preds = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            _, pred = model.layerwise(x).max(1)
        ys.append(y)
        preds.append(pred)
    return (torch.cat(ys) == torch.cat(preds)).float().sum().item() / len(torch.cat(ys))


def gan_blog_batches(g, d, target, opt_g, opt_d, batches, device, nz=100, warmup=50):
    """The article's train_model_inversion loop body over the given batches of real images in [0, 1]."""
    loss_f = nn.BCEWithLogitsLoss()
    g.train()
    d.train()
    for cnt_iter, real in enumerate(batches, start=1):
        n = len(real)
        real = real.to(device)
        ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
        with torch.no_grad():
            real_label = target.layerwise(real).max(1)[1]
        real_out = d(real, bfm.one_hot(real_label))
        loss_d_real = loss_f(real_out, torch.rand(n, device=device)) if cnt_iter < warmup else loss_f(real_out, ones)
        z = torch.randn(n, nz, 1, 1).to(device)
        with torch.no_grad():
            target_label = target.layerwise(real).max(1)[1]
        fake = g(z, bfm.one_hot(target_label))
        with torch.no_grad():
            fake_label = target.layerwise(fake).max(1)[1]
        loss_d = loss_d_real + loss_f(d(fake, bfm.one_hot(fake_label)), zeros)
        if cnt_iter % 2 == 0:
            opt_g.zero_grad()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        with torch.no_grad():
            target_label = target.layerwise(real).max(1)[1]
        z = torch.randn(n, nz, 1, 1).to(device)
        fake = g(z, bfm.one_hot(target_label))
        with torch.no_grad():
            fake_label = target.layerwise(fake).max(1)[1]
        loss_g = loss_f(d(fake, bfm.one_hot(fake_label)).view(-1), ones)
        opt_d.zero_grad()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
