"""The provider's defences do what they say: smoothing's schedule, MID's bottleneck, BiDO's terms, DP-SGD's epsilon."""
import math

import pytest
import torch
import torch.nn.functional as F

import bf_mnist as bfm
from attacklab import defences
from conftest import synthetic_splits


def test_smoothing_schedule_follows_struppek():
    alpha = -0.1
    assert [defences.smoothing_schedule(alpha, p) for p in (0.0, 0.49)] == [0.0, 0.0]
    assert defences.smoothing_schedule(alpha, 0.5) == pytest.approx(0.0)
    assert defences.smoothing_schedule(alpha, 0.6) == pytest.approx(0.2 * alpha)  # their epoch 59 of 100: 10/50
    assert defences.smoothing_schedule(alpha, 0.74) == pytest.approx(0.48 * alpha)
    assert [defences.smoothing_schedule(alpha, p) for p in (0.75, 0.99)] == [alpha, alpha]


def test_only_a_smoothed_target_can_be_kept_as_the_best():
    flags = {"defence": "label_smoothing_neg", "epochs_target_model": 2}
    assert [defences.selectable(flags, e) for e in (1, 2)] == [False, True]  # epoch 1 is plain cross-entropy
    flags["epochs_target_model"] = 8
    assert [e for e in range(1, 9) if defences.selectable(flags, e)] == [6, 7, 8]
    assert defences.selectable({"defence": "mid", "epochs_target_model": 2}, 1)


def test_scheduled_smoothing_loss_on_known_inputs():
    logits, y = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]]), torch.tensor([0, 2])
    early = defences.ScheduledSmoothing(-0.05, total_steps=100, step=10)
    assert early(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    late = defences.ScheduledSmoothing(-0.05, total_steps=100, step=80)
    # by hand for the first row, alpha = -0.05: targets (1.0333, -0.0167, -0.0167)
    z = math.log(math.exp(2) + 2)
    row = -(1.05 - 0.05 / 3) * (2 - z) + 2 * (0.05 / 3) * (0 - z)
    assert late(logits[:1], y[:1]).item() == pytest.approx(row, rel=1e-6)
    assert late.step == 81 and late.last_alpha == -0.05


def test_mid_bottleneck_samples_in_training_and_answers_its_mean():
    torch.manual_seed(0)
    model = defences.target_network("mid", n_classes=5, base_channel=4)
    x = torch.rand(6, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))  # the API's answers do not change between queries
    mu, std = model.encode(x)
    assert mu.shape == std.shape == (6, 8) and (std > 0).all()
    assert torch.allclose(model(x), model.head(mu))
    model.train()
    torch.manual_seed(1)
    loss, logits, terms = defences.mid_loss(model, x, torch.arange(6) % 5, beta=0.5)
    torch.manual_seed(1)
    ce_only, _, _ = defences.mid_loss(model, x, torch.arange(6) % 5, beta=0.0)
    assert terms["kl"] > 0 and loss.item() == pytest.approx(ce_only.item() + 0.5 * terms["kl"], rel=1e-5)
    assert logits.shape == (6, 5)


def test_bido_hiddens_follow_the_forward_and_its_terms_enter_the_loss():
    torch.manual_seed(0)
    model = bfm.TargetModel(base_channel=4, n_classes=5).eval()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 5
    hiddens, logits = model.hiddens(x)
    assert [h.shape[1:] for h in hiddens] == [(8, 12, 12), (16,)]
    assert torch.allclose(logits, model(x), rtol=1e-5, atol=1e-6 * logits.abs().max().item())
    loss, _, terms = defences.bido_loss(model, x, y, lambda_x=0.1)
    ce = F.cross_entropy(logits, y).item()
    expected = ce + 0.1 * terms["hsic_x"] - defences.BIDO_Y_OVER_X * 0.1 * terms["hsic_y"]
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert terms["hsic_x"] > 0 and terms["hsic_y"] > 0


def test_hsic_sees_dependence_not_independence():
    torch.manual_seed(0)
    a, b = torch.rand(64, 5), torch.rand(64, 5)
    gram = lambda v: defences.gaussian_gram(v, defences.BIDO_SIGMA)  # noqa: E731
    assert defences.hsic_cca(gram(a), gram(a * 2 + 1)) > 5 * defences.hsic_cca(gram(a), gram(b))


def test_dp_sgd_spends_the_requested_epsilon():
    pytest.importorskip("opacus")
    train = synthetic_splits(per_class=(40, 3, 3))["train"]  # 400 images
    model = bfm.TargetModel(base_channel=4, n_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    flags = {"batch_size": 50, "epochs_target_model": 2}
    epochs = []
    torch.manual_seed(0)
    report = defences.train_dp_sgd(model, train, None, flags, torch.device("cpu"), epsilon=4.0,
                                   on_epoch=lambda *a: epochs.append(a[0]))
    assert epochs == [1, 2]
    assert 0.9 * 4.0 <= report["epsilon"] <= 4.0 * 1.01  # Opacus' accountant: what was asked, not more
    assert report["noise_multiplier"] > 0.3 and report["delta"] == 1e-5 and report["steps"] == 16
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the target itself was trained
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    model.eval()(torch.rand(2, 1, 28, 28))  # the fused forward still runs without Opacus' hooks


@pytest.mark.parametrize("defence,strength,ok", [("none", None, True), ("none", 0.1, False),
                                                 ("label_smoothing_neg", -0.05, True), ("label_smoothing_neg", 0.05, False),
                                                 ("dp_sgd", 3.0, True), ("dp_sgd", -1.0, False),
                                                 ("mid", 0.01, True), ("bido", 0.0, False)])
def test_strength_rules(defence, strength, ok):
    assert (defences.strength_error(defence, strength) is None) == ok


def test_old_runs_keep_their_smoothing():
    assert defences.defence_strength({"defence": "label_smoothing_neg", "smoothing": -0.2}) == -0.2
    assert defences.defence_strength({"defence": "label_smoothing_neg", "smoothing": -0.2,
                                      "defence_strength": -0.1}) == -0.1
    assert defences.defence_strength({"defence": "mid"}) == defences.DEFENCES["mid"][1]


class _NoLogger:
    def scalar(self, *args):
        pass

    def commit(self):
        pass


def test_a_finished_dp_target_is_read_not_trained_again(tmp_path, monkeypatch):
    pytest.importorskip("opacus")
    from attacklab import provider
    splits = synthetic_splits(per_class=(10, 3, 3))
    private = {"train": splits["train"], "val": splits["val"]}
    cfg = {"seed": 1, "flags": {"defence": "dp_sgd", "defence_strength": 5.0, "epochs_target_model": 1,
                                "batch_size": 20, "ngpu": 0, "protocol": "same"}}
    paths = {"models": tmp_path}
    first = provider.train_target_stage(cfg, private, paths, torch.device("cpu"), _NoLogger())
    assert first[3]["name"] == "dp_sgd" and 0 < first[3]["epsilon"] <= 5.0 * 1.01
    monkeypatch.setattr(defences, "train_dp_sgd", lambda *a, **k: pytest.fail("trained again"))
    again = provider.train_target_stage(cfg, private, paths, torch.device("cpu"), _NoLogger())
    assert again[3] == first[3] and again[1] == first[1] and again[2] == pytest.approx(first[2])
    assert all(torch.equal(a, b) for a, b in zip(first[0].state_dict().values(), again[0].state_dict().values()))
