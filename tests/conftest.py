"""Shared fixtures: tiny synthetic MNIST-like data so the suite runs in minutes on 2 CPU cores."""
import gzip
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacklab import data  # noqa: E402


def same_numbers(a, b, rel=1e-5):
    """Two JSON trees equal, floats up to rel of their size (a recomputation may round the last bits otherwise)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_numbers(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_numbers(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=rel) or (math.isnan(a) and math.isnan(b))
    return a == b


def synthetic_splits(per_class=(6, 3, 3), seed=0):
    """{split: (uint8 images (N, 28, 28), labels)} with a class-dependent bright bar plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in zip(data.SPLITS, per_class):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 255  # a bar whose row encodes the class
        out[split] = (torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    return out


def write_fake_pickle(path, splits):
    """A gzipped pickle in the classic mnist.pkl.gz format: ((x float32 byte/256, y int64) x 3)."""
    raw = tuple((s[0].numpy().reshape(len(s[0]), -1).astype(np.float32) / 256.0, s[1].numpy())
                for s in (splits[k] for k in data.SPLITS))
    Path(path).write_bytes(gzip.compress(pickle.dumps(raw, protocol=4)))
    return path


def write_tiny_tree(root):
    """An ImageFolder tree train/val/test with 6/3/3 synthetic images per digit at root."""
    data.write_image_tree(root, synthetic_splits())
    return root


@pytest.fixture
def tiny_tree(tmp_path):
    """A fresh tiny tree for a test that changes it."""
    return write_tiny_tree(tmp_path / "MNIST")


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory):
    """One tiny tree for the tests of a module that only read it."""
    return write_tiny_tree(tmp_path_factory.mktemp("tiny") / "MNIST")
