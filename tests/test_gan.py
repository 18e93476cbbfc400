"""What D sees in each variant, the article's schedule, and the attacker's query accounting."""
import pytest
import torch
import torch.nn as nn

import bf_mnist as bfm
from conftest import synthetic_splits

CPU = torch.device("cpu")


class SpyD(bfm.Discriminator):
    """The real Discriminator, recording every (x, label) it judges."""

    def __init__(self):
        super().__init__(base_channel=8)
        self.calls = []

    def forward(self, x, y_onehot):
        self.calls.append((x.detach().clone(), y_onehot.argmax(1)))
        return super().forward(x, y_onehot)


class ConstantTarget(nn.Module):
    """A stub target that labels every image as `label`."""

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 10).float() + 0 * self.dummy


def aux(n=8, label=3):
    images = synthetic_splits((1, 1, 1))["train"][0][:1].repeat(n, 1, 1)
    return images, torch.full((n,), label)


def blog_epoch(d, n_images, batch, oracle, g=None):
    torch.manual_seed(0)
    g = g or bfm.Generator(input_dim=4, base_channel=8)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, "blog", None)
    images, labels = aux(n_images)
    return bfm.gan_epoch_blog(g, d, opt_g, opt_d, images, labels, oracle, 4, batch, CPU), g


def test_blog_variant_conditions_fakes_on_the_targets_label_of_the_fake():
    d, oracle = SpyD(), bfm.LabelOracle(ConstantTarget(7))
    blog_epoch(d, n_images=8, batch=4, oracle=oracle)
    real_calls = [(x, y) for x, y in d.calls if (y == 3).all()]
    fake_calls = [(x, y) for x, y in d.calls if (y == 7).all()]
    # iteration 1: G step only; iteration 2: D on real and fake, then G
    assert len(real_calls) == 1 and len(fake_calls) == 3 and len(d.calls) == 4
    x_real = real_calls[0][0]
    assert x_real.min() >= 0 and x_real.max() <= 1  # reals stay in [0, 1] against Tanh fakes
    assert min(x.min().item() for x, _ in fake_calls) < 0
    # every fake the article's loop makes is sent to the API: 4 (D, iteration 2) + 4 + 4 (G)
    assert oracle.queries == 12


def test_blog_variant_steps_d_on_even_iterations_only():
    d = bfm.Discriminator(base_channel=8)
    before = [p.clone() for p in d.parameters()]
    (_, loss_d), g = blog_epoch(d, n_images=4, batch=4, oracle=bfm.LabelOracle(ConstantTarget(1)))
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters()))
    assert loss_d != loss_d  # NaN: D was never evaluated on an odd-only epoch
    blog_epoch(d, n_images=8, batch=4, oracle=bfm.LabelOracle(ConstantTarget(1)))
    assert not all(torch.equal(a, b) for a, b in zip(before, d.parameters()))


def test_blog_variant_uses_random_real_targets_for_the_first_49_iterations(monkeypatch):
    seen = []
    real_bce = bfm.F.binary_cross_entropy_with_logits

    def spy(logits, target):
        seen.append(target.clone())
        return real_bce(logits, target)

    monkeypatch.setattr(bfm.F, "binary_cross_entropy_with_logits", spy)
    blog_epoch(bfm.Discriminator(base_channel=8), 8, 4, bfm.LabelOracle(ConstantTarget(1)))
    # calls: G(it 1), D real(it 2), D fake(it 2), G(it 2)
    real_target = seen[1]
    assert not torch.equal(real_target, torch.ones(4)) and real_target.min() >= 0 and real_target.max() < 1
    assert torch.equal(seen[2], torch.zeros(4)) and torch.equal(seen[3], torch.ones(4))
    seen.clear()
    monkeypatch.setattr(bfm, "BLOG_WARMUP_ITERS", 2)
    blog_epoch(bfm.Discriminator(base_channel=8), 8, 4, bfm.LabelOracle(ConstantTarget(1)))
    assert torch.equal(seen[1], torch.ones(4))


def corrected_epoch(**recipe_overrides):
    """One corrected epoch over 8 copies of a '3' with a spying D (the loop takes no target at all)."""
    d, g = SpyD(), bfm.Generator(input_dim=4, base_channel=8)
    recipe = dict(bfm.default_recipe(), **recipe_overrides)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, "corrected", recipe)
    images, labels = aux(8, label=3)
    torch.manual_seed(0)
    bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, labels, 4, CPU, recipe)
    return d, images


def test_corrected_variant_judges_fakes_with_the_requested_label():
    d, images = corrected_epoch(batch_size=4, translate=0)
    assert len(d.calls) == 4  # per batch: one D step on (real, fake), one G step on fakes
    for batch in range(2):
        x, y = d.calls[2 * batch]
        assert len(x) == 8
        real, fake = x[:4], x[4:]
        assert torch.allclose(real, bfm.to_unit(images[:4]) * 2 - 1)  # reals on G's [-1, 1] scale
        assert (y == 3).all()  # (G(z, y), y): the requested label, never f(G(z, y))
        assert fake.min() >= -1 and fake.max() <= 1 and not torch.allclose(fake, real)
        x_g, y_g = d.calls[2 * batch + 1]
        assert len(x_g) == 4 and (y_g == 3).all()


def test_corrected_variant_augments_what_d_sees():
    d, images = corrected_epoch(batch_size=8, translate=3)
    seen_reals = d.calls[0][0][:8]
    plain = bfm.to_unit(images) * 2 - 1
    assert not torch.equal(seen_reals, plain)
    for seen, orig in zip(seen_reals[:, 0], plain[:, 0]):  # each is a copy shifted by at most 3 pixels
        assert any(torch.equal(seen[6:22, 6:22], orig[6 - dy:22 - dy, 6 - dx:22 - dx])
                   for dy in range(-3, 4) for dx in range(-3, 4))


def test_conditional_mmd():
    torch.manual_seed(0)
    a, b = torch.rand(20, 1, 28, 28), torch.rand(20, 1, 28, 28) * 0.2
    labels = torch.arange(20) % 10
    scales = bfm.default_recipe()["mmd_scales"]
    assert bfm.conditional_mmd2(a, a, labels, labels, scales) == pytest.approx(0, abs=1e-6)
    assert bfm.conditional_mmd2(a, b, labels, labels, scales) > 0.1
    # the same images under other labels are a different labelled distribution
    assert bfm.conditional_mmd2(a, a, labels, (labels + 1) % 10, scales) > 0.1


def test_oracle_counts_every_image_and_returns_labels_only():
    oracle = bfm.LabelOracle(ConstantTarget(5))
    out = oracle(torch.rand(7, 1, 28, 28))
    oracle(torch.rand(3, 1, 28, 28))
    assert oracle.queries == 10
    assert out.dtype == torch.int64 and out.shape == (7,) and (out == 5).all()
    assert not hasattr(oracle, "model") and not hasattr(oracle, "parameters")


def test_generator_images_are_in_unit_range_and_deterministic():
    g = bfm.Generator(input_dim=4, base_channel=8)
    noise = bfm.fixed_noise(20, 4, seed=3, device=CPU)
    a = bfm.generator_images(g, bfm.grid_labels(2), noise, "corrected")
    b = bfm.generator_images(g, bfm.grid_labels(2), bfm.fixed_noise(20, 4, seed=3, device=CPU), "corrected")
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == (20, 1, 28, 28)
    assert g.training  # the eval-mode switch is undone


def test_accuracy_by_class():
    requested = bfm.grid_labels(2)
    pred = requested.clone()
    pred[0] = 9  # one miss in class 0
    acc, per_class = bfm.accuracy_by_class(pred, requested)
    assert acc == pytest.approx(19 / 20) and per_class[0] == 0.5 and per_class[1:] == [1.0] * 9
