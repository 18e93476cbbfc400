"""Training and querying any classifier on uint8 MNIST tensors: one epoch, labels, accuracy."""
import copy

import torch
import torch.nn.functional as F

from attacklab.data import batch_indices, to_unit, translate
from attacklab.runtime import progress


def adam(params, lr, betas):
    """Adam with the fused kernel: one pass over D's 46M weights instead of several."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class ScheduledOptimizer:
    """An optimizer whose step() also advances its learning-rate schedule."""

    def __init__(self, optimizer, schedule):
        self.optimizer, self.schedule = optimizer, schedule

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.optimizer.step()
        self.schedule.step()


def shift_2px(x01):
    """Training augmentation of the evaluator and the surrogate: random shifts up to 2 px, black fill."""
    return translate(x01, 2, fill=0.0)


def train_classifier_epoch(model, optimizer, images, labels, batch_size, device, max_batches=None,
                           augment=None, desc="train", loss_fn=F.cross_entropy):
    """One epoch of training on uint8 images with labels (N,) or soft targets (N, k); returns (mean loss, accuracy)."""
    def step_loss(net, x, y):
        logits = net(x)
        return loss_fn(logits, y), logits, {}
    return train_epoch_with(model, optimizer, images, labels, batch_size, device, step_loss, max_batches, augment,
                            desc)[:2]


def train_epoch_with(model, optimizer, images, labels, batch_size, device, step_loss, max_batches=None, augment=None,
                     desc="train"):
    """One epoch where step_loss(model, x, y) gives (loss, logits, {term: value}) (a loss that may read the
    network's insides): (mean loss, accuracy, mean of each term)."""
    model.train()
    total_loss, correct, seen, terms = 0.0, 0, 0, {}
    for idx in progress(batch_indices(len(images), batch_size, True, max_batches), desc):
        x = to_unit(images[idx]).to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        if augment is not None:
            x = augment(x)
        loss, logits, extra = step_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == (y.argmax(1) if y.dim() == 2 else y)).sum().item()  # y: labels or soft targets
        seen += len(idx)
        for key, value in extra.items():
            terms[key] = terms.get(key, 0.0) + value * len(idx)
    return total_loss / seen, correct / seen, {key: value / seen for key, value in terms.items()}


@torch.no_grad()  # not inference_mode: the labels condition G and D, whose forward is tracked by autograd
def predict_logits(model, images01, batch_size=1000):
    """Logits of float images in [0, 1] (N, 1, 28, 28), in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(images01[i:i + batch_size].to(device)).cpu() for i in range(0, len(images01), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def predict_labels(model, images01, batch_size=1000):
    """Predicted labels of float images in [0, 1] (N, 1, 28, 28), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(images01[i:i + batch_size].to(device)).argmax(1) for i in range(0, len(images01), batch_size)]
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)


def classifier_accuracy(model, images, labels, batch_size=200, max_batches=None):
    """Accuracy of model on uint8 images (on the first max_batches batches, if given).

    Measured on a channels_last copy in inference mode, batch 200: 3x faster than the plain
    forward on this CPU; logits agree to ~1e-7. The attacker's API keeps the plain model.
    """
    if max_batches:
        images, labels = images[:batch_size * max_batches], labels[:batch_size * max_batches]
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    device = next(fast.parameters()).device
    with torch.inference_mode():
        pred = torch.cat([fast(to_unit(images[i:i + batch_size]).to(device).contiguous(
            memory_format=torch.channels_last)).argmax(1).cpu() for i in range(0, len(images), batch_size)])
    return (pred == labels).float().mean().item()
