"""The attack metrics on inputs whose answers are known."""
import pytest
import torch
import torch.nn as nn

from attacklab import metrics, sampling
from attacklab.data import to_unit
from attacklab.evaluator import Evaluator, evaluator_features, reference_rows
from conftest import synthetic_splits


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = torch.randn(300, 16)
    mu, cov = metrics.feature_stats(feats)
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_shifted_features_is_the_squared_shift():
    feats = torch.randn(300, 16, dtype=torch.float64)
    shift = torch.linspace(-1, 2, 16, dtype=torch.float64)
    fid = metrics.frechet_distance(*metrics.feature_stats(feats), *metrics.feature_stats(feats + shift))
    assert fid == pytest.approx(shift.pow(2).sum().item(), rel=1e-6)


def test_frechet_distance_sees_a_different_spread():
    feats = torch.randn(500, 8, dtype=torch.float64)
    mu, cov = metrics.feature_stats(feats)
    # covariances C and 4C: tr(C + 4C - 2 (4 C^2)^1/2) = tr(C); means 0 and 0 * 2
    expected = torch.trace(cov).item() + mu.pow(2).sum().item()
    assert metrics.frechet_distance(mu, cov, *metrics.feature_stats(2 * feats)) == pytest.approx(expected, rel=1e-6)


def test_knn_distance_of_training_images_to_themselves_is_zero():
    feats, labels = torch.randn(50, 8) * 100, torch.arange(50) % 10  # far apart: each is its own neighbour
    assert metrics.knn_distance(feats, labels, feats, labels) == pytest.approx(0, abs=1e-6)
    assert metrics.knn_distance(feats + 1, labels, feats, labels) == pytest.approx(8.0, rel=1e-5)


class BarReader(nn.Module):
    """A stub evaluator for the synthetic digits: features = brightness of each class's bar rows."""

    def __init__(self):
        super().__init__()
        self.head = nn.Identity()
        self.dummy = nn.Parameter(torch.zeros(1))

    def features(self, x):
        rows = x[:, 0, :, 4:24].mean(2)  # (N, 28)
        return torch.stack([rows[:, 2 + 2 * c: 4 + 2 * c].mean(1) for c in range(10)], 1) * 10 + 0 * self.dummy


def stub_evaluator():
    train_images, train_labels = synthetic_splits((20, 3, 3))["train"]
    model = BarReader()
    return Evaluator(model, evaluator_features(model, to_unit(train_images)), train_labels)


def test_a_perfect_fake_generator_scores_one():
    evaluator = stub_evaluator()
    test_images, test_labels = synthetic_splits((1, 1, 10), seed=1)["test"]
    order = torch.argsort(test_labels, stable=True)  # "generated" images that are real ones of the requested class
    right = evaluator.metrics(to_unit(test_images[order]), sampling.grid_labels(10))
    assert right["accuracy_by_evaluator"] == 1.0
    assert right["per_class_accuracy_by_evaluator"] == [1.0] * 10
    wrong = evaluator.metrics(to_unit(test_images[order]), (sampling.grid_labels(10) + 1) % 10)
    assert wrong["accuracy_by_evaluator"] == 0.0 and wrong["knn_dist"] > right["knn_dist"]


def test_reference_rows_are_ordered():
    evaluator = stub_evaluator()
    rows = reference_rows(evaluator, synthetic_splits((1, 1, 10), seed=2)["test"], per_class=10)
    real, noise = rows["real_test"], rows["uniform_noise"]
    assert real["accuracy_by_evaluator"] > noise["accuracy_by_evaluator"]
    assert real["fid_evaluator"] < noise["fid_evaluator"]
    assert real["knn_dist"] < noise["knn_dist"]


def test_knn_aux_follows_the_reference_set_it_is_given():
    evaluator = stub_evaluator()
    images = to_unit(synthetic_splits((1, 1, 10), seed=3)["test"][0])
    near, far = (to_unit(synthetic_splits((1, 1, 10), seed=s)["test"][0]) for s in (3, 4))
    assert evaluator.nearest(images, near) == 0.0  # the images themselves
    assert evaluator.nearest(images, far) > 0.0  # a second set is not answered from the first one's features
    assert evaluator.nearest(images, near.clone()) == 0.0
    assert evaluator.nearest(images, far) == metrics.nearest_distance(evaluator_features(evaluator.model, images),
                                                                      evaluator_features(evaluator.model, far))
