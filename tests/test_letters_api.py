"""The letters set and the API's answer formats."""

import numpy as np
import pytest
import torch

import bf_mnist as bfm
from attacklab import letters
from attacklab.api import PredictionAPI, as_labels


def test_letters_are_deterministic_by_seed_and_mnist_placed():
    a, la = letters.make_letters(60, seed=3)
    b, lb = letters.make_letters(60, seed=3)
    c, _ = letters.make_letters(60, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.shape == (60, 28, 28) and a.dtype == torch.uint8
    x = a.float() / 255
    assert x.min() == 0 and x.max() <= 1
    for img in x:
        ys, xs = torch.nonzero(img > 0.05, as_tuple=True)
        assert ys.max() - ys.min() < 21 and xs.max() - xs.min() < 21  # inside a 20x20 box (+1 px of antialiasing)
        cy = (img.sum(1) * torch.arange(28)).sum() / img.sum()
        cx = (img.sum(0) * torch.arange(28)).sum() / img.sum()
        assert abs(cy - 13.5) < 1.5 and abs(cx - 13.5) < 1.5  # centred by the centre of mass


def test_the_letters_set_holds_letters_only():
    _, which = letters.make_letters(200, seed=0)
    drawn = {letters.LETTERS[i] for i in which.tolist()}
    assert drawn <= set(letters.LETTERS) and not drawn & set("0123456789")
    assert len(drawn) > 40  # both cases of most letters
    assert set(letters.DIGIT_LOOKALIKES) <= set(letters.LETTERS)


def test_letters_are_cached(tmp_path):
    images, which = letters.load_letters(tmp_path, 20, seed=1, log=lambda *_: None)
    again, _ = letters.load_letters(tmp_path, 20, seed=1, log=lambda *_: pytest.fail("must read the cache"))
    assert torch.equal(images, again) and (tmp_path / "letters_n20_seed1.pt").is_file()


@pytest.fixture
def target():
    torch.manual_seed(0)
    return bfm.TargetModel(base_channel=4).eval()


def test_each_api_format_returns_what_it_says_and_counts(target):
    x = torch.rand(6, 1, 28, 28)
    labels = PredictionAPI(target)(x)
    probs_api = PredictionAPI(target, output="probs")
    probs = probs_api(x)
    rounded = PredictionAPI(target, output="rounded", decimals=1)(x)
    assert labels.shape == (6,) and labels.dtype == torch.int64
    assert probs.shape == (6, 10) and torch.allclose(probs.sum(1), torch.ones(6), atol=1e-5)
    assert torch.equal(as_labels(probs), labels)
    assert torch.equal(rounded, torch.round(probs, decimals=1)) and ((rounded * 10) == (rounded * 10).round()).all()
    probs_api(x[:2])
    assert probs_api.queries == 8
