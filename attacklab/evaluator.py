"""The experimenter's evaluation classifier: its network, its training, its cache, and the metrics it computes.

The attacker never sees it. It is trained on the private train split (all ten digits) with its
own seed, and cached per seed under the data folder, so every run and every protocol is judged
by the same network.
"""
import math
from pathlib import Path

import torch
import torch.nn as nn

from attacklab.classifiers import ScheduledOptimizer, classifier_accuracy, shift_2px, train_classifier_epoch
from attacklab.data import IMAGE_SIZE, N_CLASSES, to_unit
from attacklab.metrics import (accuracy_by_class, class_fid, feature_stats, knn_distance, nearest_distance,
                               scalar_metrics, tensor_digest)
from attacklab.runtime import save_checkpoint, seeded_fork

EVALUATOR_EPOCHS = 3
REFERENCE_PER_CLASS = 100
DRY_RUN_IMAGES = 1000  # a dry run's throwaway evaluator compares with the first 1,000 train (and aux) images only


class EvaluatorNet(nn.Module):
    """A ReLU + BatchNorm CNN unlike the target, with a 128-d feature layer for FID and KNN."""

    def __init__(self, n_classes=N_CLASSES, feature_dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),  # (32, 28, 28)
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),  # (32, 28, 28)
            nn.MaxPool2d(2),  # (32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),  # (64, 14, 14)
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),  # (64, 14, 14)
            nn.MaxPool2d(2),  # (64, 7, 7)
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),  # (128,)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, n_classes))  # (10,)

    def forward(self, x):
        return self.head(self.features(x))


def train_evaluator_net(train, test, seed, device, epochs=EVALUATOR_EPOCHS, batch_size=128, dry_run=False):
    """Train the evaluation network on the private train split; returns (model, test accuracy).

    Its randomness is forked from the run's, so loading it from the cache or training it
    leaves the attack's random streams unchanged.
    """
    with seeded_fork(seed, device):
        model = EvaluatorNet().to(device)
        steps = 1 if dry_run else epochs * math.ceil(len(train[0]) / batch_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        stepper = ScheduledOptimizer(optimizer, schedule)
        for epoch in range(1 if dry_run else epochs):
            train_classifier_epoch(model, stepper, *train, batch_size, device, 1 if dry_run else None,
                                   augment=shift_2px, desc=f"evaluator {epoch + 1}")
        model.eval()
    return model, classifier_accuracy(model, *test, max_batches=1 if dry_run else None)


@torch.no_grad()
def evaluator_features(model, images01, batch_size=1000):
    """Penultimate-layer features (N, 128) of float images in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.features(images01[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images01), batch_size)])


class Evaluator:
    """The evaluation network with the private train split's features: everything the metrics compare against."""

    def __init__(self, model, train_feats, train_labels, dry_run=False):
        self.model, self.reference_limit = model, DRY_RUN_IMAGES if dry_run else None
        self.train_feats, self.train_labels = train_feats, train_labels
        self.stats = {c: feature_stats(train_feats[train_labels == c]) for c in range(N_CLASSES)}
        self._reference = (None, None)  # (digest, features) of the last reference set nearest() was given

    @torch.no_grad()
    def metrics(self, images01, requested, classes=tuple(range(N_CLASSES))):
        """Attack metrics of images in [0, 1] meant as the requested digits (per class: in the order of classes)."""
        feats = evaluator_features(self.model, images01)
        pred = self.model.head(feats).argmax(1)
        acc, per_class = accuracy_by_class(pred, requested, classes)
        return {"accuracy_by_evaluator": acc, "per_class_accuracy_by_evaluator": per_class,
                "fid_evaluator": class_fid(feats, requested, self.stats),
                "knn_dist": knn_distance(feats, requested, self.train_feats, self.train_labels)}

    def predict(self, images01):
        """The evaluator's labels of images in [0, 1]."""
        return self.model.head(evaluator_features(self.model, images01)).argmax(1)

    def nearest(self, images01, ref_images01):
        """Mean squared feature distance from each image to its nearest reference image (knn_aux)."""
        return nearest_distance(evaluator_features(self.model, images01),
                                self.reference_features(ref_images01[:self.reference_limit]))

    def reference_features(self, images01):
        """Features of a reference set, computed once per set: a run compares the attack and each control with
        the same aux images."""
        digest = tensor_digest(images01)
        if self._reference[0] != digest:
            self._reference = (digest, evaluator_features(self.model, images01))
        return self._reference[1]


def reference_rows(evaluator, test, per_class=REFERENCE_PER_CLASS, seed=0, classes=tuple(range(N_CLASSES))):
    """The same metrics for held-out real test images of the classes (the ceiling) and uniform noise (the floor)."""
    images, labels = test
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in classes])
    real = evaluator.metrics(to_unit(images[pick]), labels[pick], classes)
    requested = torch.tensor(classes).repeat_interleave(per_class)
    noise = torch.rand(len(requested), 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    return {"real_test": scalar_metrics(real),
            "uniform_noise": scalar_metrics(evaluator.metrics(noise, requested, classes))}


def compared_split(train, dry_run):
    """The train images FID and KNN compare with: all of them, or a dry run's first DRY_RUN_IMAGES (with the labels)."""
    return tuple(t[:DRY_RUN_IMAGES] for t in train) if dry_run else train


def load_evaluator(path, train, test, seed, device, dry_run=False, log=print):
    """The evaluator cached at path if it was trained on this train split with this seed, else a new one.

    Returns (Evaluator, its checkpoint dict: test_accuracy, reference rows, ...).
    """
    digest = tensor_digest(*train)
    path = Path(path)
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if ckpt.get("kind") == "evaluator" and ckpt["seed"] == seed and ckpt["data"] == digest:
                model = EvaluatorNet()
                model.load_state_dict(ckpt["model"])
                model.to(device).eval()
                labels = compared_split(train, ckpt["dry_run"])[1]
                return Evaluator(model, ckpt["train_feats"], labels, ckpt["dry_run"]), ckpt
        except Exception:
            pass  # damaged or foreign: train again below
    log(f"training the evaluation classifier (seed {seed}); it is cached at {path}")
    model, test_acc = train_evaluator_net(train, test, seed, device, dry_run=dry_run)
    compared = compared_split(train, dry_run)
    evaluator = Evaluator(model, evaluator_features(model, to_unit(compared[0])), compared[1], dry_run)
    fields = {"seed": seed, "data": digest, "model": model.state_dict(), "test_accuracy": test_acc,
              "train_feats": evaluator.train_feats, "reference": reference_rows(evaluator, test), "dry_run": dry_run}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint("evaluator", path, **fields)
    log(f"evaluation classifier: test accuracy {test_acc:.4f}")
    return evaluator, {"kind": "evaluator", **fields}
