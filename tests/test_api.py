"""The provider's API is the attacker's only door to the target: it counts, enforces a budget, and is all the attack gets."""
import inspect

import pytest
import torch
import torch.nn as nn

import bf_mnist as bfm
from attacklab import attack
from attacklab.api import PredictionAPI, QueryBudgetExceeded
from attacklab.report import Logger
from conftest import synthetic_splits

CPU = torch.device("cpu")


class SpyTarget(nn.Module):
    """A real (tiny) target that counts every image its forward sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = bfm.TargetModel(base_channel=4)
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += len(x)
        return self.net(x)


def test_the_api_counts_every_image_and_answers_labels():
    target = SpyTarget()
    api = PredictionAPI(target)
    out = api(torch.rand(7, 1, 28, 28))
    api(torch.rand(3, 1, 28, 28))
    assert api.queries == 10 == target.images_seen
    assert out.dtype == torch.int64 and out.shape == (7,) and out.min() >= 0 and out.max() < 10


def test_a_budget_is_enforced_before_the_target_sees_the_batch():
    target = SpyTarget()
    api = PredictionAPI(target, budget=12)
    api(torch.rand(10, 1, 28, 28))
    assert api.remaining == 2
    with pytest.raises(QueryBudgetExceeded, match="--query_budget"):
        api(torch.rand(3, 1, 28, 28))
    assert api.queries == 10 and target.images_seen == 10  # the refused batch never reached the target
    api(torch.rand(2, 1, 28, 28))
    assert api.remaining == 0


def test_the_count_survives_a_checkpoint():
    api = PredictionAPI(SpyTarget())
    api(torch.rand(4, 1, 28, 28))
    again = PredictionAPI(SpyTarget())
    again.load_state_dict(api.state_dict())
    assert again.queries == 4


def test_the_attack_stage_takes_no_target_or_evaluator():
    names = set(inspect.signature(attack.run_inversion).parameters)
    assert {"api", "aux_images"} <= names
    assert not names & {"target", "evaluator", "judge", "model", "data", "monitor"}


@pytest.mark.parametrize("variant", ["corrected", "blog"])
def test_the_attack_reaches_the_target_only_through_the_api(tmp_path, variant):
    target = SpyTarget()
    api = PredictionAPI(target)
    images = synthetic_splits((3, 1, 1))["train"][0]  # 30 attacker images
    paths = {"models": tmp_path / "models", "samples": tmp_path / "samples"}
    for p in paths.values():
        p.mkdir()
    cfg = {"seed": 1, "recipe": bfm.default_recipe(variant),
           "flags": {"variant": variant, "dim_initial_vec": 8, "gan_batch_size": 10, "epochs_gan": 2,
                     "ngpu": 0, "checkpoint_every": 1, "protocol": "same"}}
    logger = Logger(tmp_path / "tb")
    outcome = attack.complete(attack.run_inversion(cfg, api, images, paths, CPU, logger))
    logger.close()
    assert target.images_seen == api.queries  # nothing reached the target but through the API
    # blog: 3 batches of 10 per epoch, every fake sent: 3 G steps + 1 D step (even iterations only)
    expected = 30 if variant == "corrected" else 30 + 2 * (3 + 1) * 10
    assert api.queries == expected
    assert len(outcome.history) == 2 and (tmp_path / "models" / "gan_last.pt").is_file()
