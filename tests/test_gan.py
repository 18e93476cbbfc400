"""What D sees in each variant, the article's schedule, and the attacker's query accounting."""
import copy

import pytest
import torch
import torch.nn as nn

import bf_mnist as bfm
from attacklab import data, sampling
from attacklab.api import PredictionAPI
from attacklab.classifiers import predict_labels
from attacklab.data import to_unit
from attacklab.metrics import accuracy_by_class
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


def blog_epoch(d, n_images, batch, api, g=None, **recipe_overrides):
    torch.manual_seed(0)
    g = g or bfm.Generator(input_dim=4, base_channel=8)
    recipe = dict(bfm.default_recipe("blog"), batch_size=batch, **recipe_overrides)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    images, labels = aux(n_images)
    return bfm.gan_epoch_blog(g, d, opt_g, opt_d, images, labels, recipe, CPU, 4, api=api), g


def test_blog_variant_conditions_fakes_on_the_targets_label_of_the_fake():
    d, api = SpyD(), PredictionAPI(ConstantTarget(7))
    blog_epoch(d, n_images=8, batch=4, api=api)
    real_calls = [(x, y) for x, y in d.calls if (y == 3).all()]
    fake_calls = [(x, y) for x, y in d.calls if (y == 7).all()]
    # iteration 1: G step only; iteration 2: D on real and fake, then G
    assert len(real_calls) == 1 and len(fake_calls) == 3 and len(d.calls) == 4
    x_real = real_calls[0][0]
    assert x_real.min() >= 0 and x_real.max() <= 1  # reals stay in [0, 1] against Tanh fakes
    assert min(x.min().item() for x, _ in fake_calls) < 0
    # every fake the article's loop makes is sent to the API: 4 (D, iteration 2) + 4 + 4 (G)
    assert api.queries == 12


def test_blog_variant_steps_d_on_even_iterations_only():
    d = bfm.Discriminator(base_channel=8)
    before = [p.clone() for p in d.parameters()]
    (_, loss_d), g = blog_epoch(d, n_images=4, batch=4, api=PredictionAPI(ConstantTarget(1)))
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters()))
    assert loss_d != loss_d  # NaN: D was never evaluated on an odd-only epoch
    blog_epoch(d, n_images=8, batch=4, api=PredictionAPI(ConstantTarget(1)))
    assert not all(torch.equal(a, b) for a, b in zip(before, d.parameters()))


def test_blog_variant_uses_random_real_targets_for_the_first_49_iterations(monkeypatch):
    seen = []
    real_bce = bfm.F.binary_cross_entropy_with_logits

    def spy(logits, target):
        seen.append(target.clone())
        return real_bce(logits, target)

    monkeypatch.setattr(bfm.F, "binary_cross_entropy_with_logits", spy)
    blog_epoch(bfm.Discriminator(base_channel=8), 8, 4, PredictionAPI(ConstantTarget(1)))
    # calls: G(it 1), D real(it 2), D fake(it 2), G(it 2)
    real_target = seen[1]
    assert not torch.equal(real_target, torch.ones(4)) and real_target.min() >= 0 and real_target.max() < 1
    assert torch.equal(seen[2], torch.zeros(4)) and torch.equal(seen[3], torch.ones(4))
    seen.clear()
    blog_epoch(bfm.Discriminator(base_channel=8), 8, 4, PredictionAPI(ConstantTarget(1)), random_real_targets_until=2)
    assert torch.equal(seen[1], torch.ones(4))


def corrected_epoch(**recipe_overrides):
    """One corrected epoch over 8 copies of a '3' with a spying D (the loop takes no target at all)."""
    d, g = SpyD(), bfm.Generator(input_dim=4, base_channel=8)
    recipe = dict(bfm.default_recipe(), **recipe_overrides)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    images, labels = aux(8, label=3)
    torch.manual_seed(0)
    bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, labels, recipe, CPU, 4)
    return d, images


def test_corrected_variant_judges_fakes_with_the_requested_label():
    d, images = corrected_epoch(batch_size=4, translate=0)
    assert len(d.calls) == 4  # per batch: one D step on (real, fake), one G step on fakes
    for batch in range(2):
        x, y = d.calls[2 * batch]
        assert len(x) == 8
        real, fake = x[:4], x[4:]
        assert torch.allclose(real, to_unit(images[:4]) * 2 - 1)  # reals on G's [-1, 1] scale
        assert (y == 3).all()  # (G(z, y), y): the requested label, never f(G(z, y))
        assert fake.min() >= -1 and fake.max() <= 1 and not torch.allclose(fake, real)
        x_g, y_g = d.calls[2 * batch + 1]
        assert len(x_g) == 4 and (y_g == 3).all()


def test_corrected_variant_augments_what_d_sees():
    d, images = corrected_epoch(batch_size=8, translate=3)
    seen_reals = d.calls[0][0][:8]
    plain = to_unit(images) * 2 - 1
    assert not torch.equal(seen_reals, plain)
    for seen, orig in zip(seen_reals[:, 0], plain[:, 0]):  # each is a copy shifted by at most 3 pixels
        assert any(torch.equal(seen[6:22, 6:22], orig[6 - dy:22 - dy, 6 - dx:22 - dx])
                   for dy in range(-3, 4) for dx in range(-3, 4))


class SpySurrogate(nn.Module):
    """A fixed linear 'surrogate' that records what G shows it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(28 * 28, 10)
        nn.init.normal_(self.linear.weight, std=0.1)  # a decisive classifier: its gradients are informative
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def surrogate_ce_after(surrogate, weight, epochs):
    """Cross-entropy of the surrogate's label for G's images against the requested 3, after training G."""
    torch.manual_seed(0)
    g, d = bfm.Generator(input_dim=4, base_channel=8), bfm.Discriminator(base_channel=8)
    recipe = dict(bfm.default_recipe(), batch_size=2, mmd_weight=0.0, adv_weight=0.0, surrogate_weight=weight)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    images, labels = aux(8, label=3)
    for _ in range(epochs):
        bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, labels, recipe, CPU, 4, surrogate=surrogate)
    fakes = sampling.generator_images(g, labels, sampling.fixed_noise(8, 4, 0, CPU))
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(surrogate(fakes), labels).item()


def test_the_surrogate_loss_teaches_g_the_requested_class():
    surrogate = SpySurrogate().requires_grad_(False)
    untrained = surrogate_ce_after(surrogate, 1.0, epochs=0)
    trained = surrogate_ce_after(surrogate, 1.0, epochs=10)
    assert trained < 0.5 * untrained
    # G shows the surrogate images on the API's [0, 1] scale, never the target itself
    assert min(x.min().item() for x in surrogate.seen) >= 0 and max(x.max().item() for x in surrogate.seen) <= 1
    surrogate.seen.clear()
    surrogate_ce_after(surrogate, 0.0, epochs=1)
    assert len(surrogate.seen) == 1  # weight 0: only the measurement above, never during training


def surrogate_inputs(noise, batch_size=32, **overrides):
    """What the surrogate sees in each G step of an epoch over 32 images (surrogate_noise `noise`, `overrides`)."""
    surrogate = SpySurrogate().requires_grad_(False)
    torch.manual_seed(0)
    g, d = bfm.Generator(input_dim=4, base_channel=8), bfm.Discriminator(base_channel=8)
    recipe = dict(bfm.default_recipe(), batch_size=batch_size, surrogate_translate=0, surrogate_noise=noise,
                  **overrides)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    images, labels = aux(32, label=3)
    bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, labels, recipe, CPU, 4, surrogate=surrogate)
    return surrogate.seen


def first_surrogate_input(noise, **overrides):
    """What the surrogate sees in G's first step, with the recipe's surrogate_noise set to `noise` (and `overrides`)."""
    return surrogate_inputs(noise, **overrides)[0]


def test_the_surrogate_noise_is_added_to_gs_image_with_the_std_asked():
    clean, noisy = first_surrogate_input(0.0), first_surrogate_input(0.3)
    assert clean.min() >= 0 and clean.max() <= 1  # no noise: G's image itself, as before the entry existed
    diff = noisy - clean  # the same G and the same image in both runs; only the noise differs
    assert abs(diff.std().item() - 0.3) < 0.015 and abs(diff.mean().item()) < 0.015


def test_the_surrogate_cutout_hides_one_square_of_gs_image_and_leaves_the_rest():
    clean, cut = first_surrogate_input(0.0), first_surrogate_input(0.0, surrogate_cutout=14)
    changed = (cut != clean)[:, 0]  # (32, 28, 28); G's pixels are never exactly 0, so every hidden one changed
    assert torch.equal(changed.sum((1, 2)), torch.full((32,), 14 * 14))
    assert torch.all(cut[:, 0][changed] == 0)
    assert torch.equal(changed.any(2).sum(1), torch.full((32,), 14))  # one square: 14 rows, 14 columns
    assert torch.equal(changed.any(1).sum(1), torch.full((32,), 14))


def squares(per_class, seed):
    """uint8 images whose class is the size of a centred bright square (unchanged by the +-2 px shifts)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    images = torch.randint(0, 60, (len(labels), 28, 28), generator=gen, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        lo = 12 - c
        images[i, lo:lo + 4 + 2 * c, lo:lo + 4 + 2 * c] = 255
    return images, labels


def test_the_surrogate_learns_the_apis_labels_without_touching_the_global_rng():
    (x, y), (x_held, y_held) = squares(12, seed=0), squares(3, seed=1)
    api_labels = (y + 1) % 10  # whatever the API says, right or wrong, is what it learns
    state = torch.get_rng_state()
    model, fit = bfm.train_surrogate(x, api_labels, seed=5, device=CPU, epochs=25, batch_size=20)
    assert torch.equal(torch.get_rng_state(), state)
    held = predict_labels(model, to_unit(x_held))
    assert (held == (y_held + 1) % 10).float().mean() >= 0.9 and fit >= 0.7  # fit: in train mode, with dropout
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    again, _ = bfm.train_surrogate(x, api_labels, seed=5, device=CPU, epochs=25, batch_size=20)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_conditional_mmd():
    torch.manual_seed(0)
    a, b = torch.rand(20, 1, 28, 28), torch.rand(20, 1, 28, 28) * 0.2
    labels = torch.arange(20) % 10
    scales = bfm.default_recipe()["mmd_scales"]
    assert bfm.conditional_mmd2(a, a, labels, labels, scales) == pytest.approx(0, abs=1e-6)
    assert bfm.conditional_mmd2(a, b, labels, labels, scales) > 0.1
    # the same images under other labels are a different labelled distribution
    assert bfm.conditional_mmd2(a, a, labels, (labels + 1) % 10, scales) > 0.1


def test_generator_images_are_in_unit_range_and_deterministic():
    g = bfm.Generator(input_dim=4, base_channel=8)
    noise = sampling.fixed_noise(20, 4, seed=3, device=CPU)
    a = sampling.generator_images(g, sampling.grid_labels(2), noise)
    b = sampling.generator_images(g, sampling.grid_labels(2), sampling.fixed_noise(20, 4, seed=3, device=CPU))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == (20, 1, 28, 28)
    assert g.training  # the eval-mode switch is undone


def test_accuracy_by_class():
    requested = sampling.grid_labels(2)
    pred = requested.clone()
    pred[0] = 9  # one miss in class 0
    acc, per_class = accuracy_by_class(pred, requested)
    assert acc == pytest.approx(19 / 20) and per_class[0] == 0.5 and per_class[1:] == [1.0] * 9


def test_learning_rates_decay_linearly_with_the_epoch():
    g, d = bfm.Generator(input_dim=4, base_channel=8), bfm.Discriminator(base_channel=8)
    recipe = bfm.default_recipe()
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    for epoch, factor in ((1, 1.0), (4, 4 / 7), (7, 1 / 7)):
        bfm.set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, 7)
        assert opt_g.param_groups[0]["lr"] == pytest.approx(recipe["lr_g"] * factor)
        assert opt_d.param_groups[0]["lr"] == pytest.approx(recipe["lr_d"] * factor)
    bfm.set_epoch_learning_rates(opt_g, opt_d, dict(recipe, lr_decay=None), 7, 7)
    assert opt_g.param_groups[0]["lr"] == recipe["lr_g"]


def test_learning_rates_decay_linearly_with_the_step_when_asked():
    g, d = bfm.Generator(input_dim=4, base_channel=8), bfm.Discriminator(base_channel=8)
    recipe = dict(bfm.default_recipe(), lr_decay="linear_step")
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    for epoch, step, factor in ((1, 0, 1.0), (1, 2, 0.75), (2, 0, 0.5), (2, 3, 0.125)):  # 2 epochs of 4 steps
        bfm.set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, 2, step, 4)
        assert opt_g.param_groups[0]["lr"] == pytest.approx(recipe["lr_g"] * factor)
        assert opt_d.param_groups[0]["lr"] == pytest.approx(recipe["lr_d"] * factor)


def test_a_corrected_epoch_decays_the_learning_rates_step_by_step():
    g, d = bfm.Generator(input_dim=4, base_channel=8), bfm.Discriminator(base_channel=8)
    recipe = dict(bfm.default_recipe(), lr_decay="linear_step", batch_size=10, n_classes=10, epoch=2, epochs=2)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    images, labels = (torch.rand(40, 28, 28) * 255).to(torch.uint8), torch.arange(40) % 10
    bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, labels, recipe, CPU, 4)  # 4 steps, the second epoch of 2
    assert opt_g.param_groups[0]["lr"] == pytest.approx(recipe["lr_g"] * (1 - (1 + 3 / 4) / 2))  # its last step's
    assert opt_d.param_groups[0]["lr"] == pytest.approx(recipe["lr_d"] * (1 - (1 + 3 / 4) / 2))


def test_random_affine_is_the_identity_at_zero_and_moves_each_image_its_own_way():
    torch.manual_seed(0)
    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # an upright bar in the centre
    assert torch.allclose(data.random_affine(x, 0, 0.0), x, atol=1e-6)
    moved = data.random_affine(x, 30, 0.2)
    assert moved.shape == x.shape and moved.min() >= 0 and moved.max() <= 1
    assert all((moved[i] - x[i]).abs().sum() > 1 for i in range(6))
    assert len({round(moved[i].sum().item(), 3) for i in range(6)}) > 1  # sizes differ: per-image scales
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = [((moved[i, 0] * grid).sum() / moved[i].sum()).item() for i in range(6) for grid in (rows, cols)]
    assert max(abs(c - 13.5) for c in centre) < 0.5  # about the image's centre, not a corner


def test_random_cutout_hides_one_square_per_image_each_in_its_own_place():
    torch.manual_seed(0)
    x = torch.rand(50, 1, 28, 28) + 0.5  # no pixel is 0 before
    hidden = data.random_cutout(x, 10) == 0  # (50, 1, 28, 28)
    assert torch.equal(hidden.sum((1, 2, 3)), torch.full((50,), 100))
    rows, cols = hidden.any(3).squeeze(1), hidden.any(2).squeeze(1)  # (50, 28) each: which rows, columns
    assert torch.equal(rows.sum(1), torch.full((50,), 10)) and torch.equal(cols.sum(1), torch.full((50,), 10))
    assert len({(int(r.int().argmax()), int(c.int().argmax())) for r, c in zip(rows, cols)}) > 20
    assert torch.equal(torch.where(hidden, x, data.random_cutout(x, 0)), x)  # size 0 hides nothing


def test_an_ensemble_of_surrogates_gives_the_class_all_members_give():
    torch.manual_seed(0)
    one = bfm.SurrogateClassifier(5).eval()
    x = torch.rand(7, 1, 28, 28)
    same = bfm.SurrogateEnsemble([one, copy.deepcopy(one)])
    assert torch.allclose(same(x), one(x).log_softmax(1), atol=1e-6)
    votes = bfm.SurrogateEnsemble([bfm.SurrogateClassifier(5) for _ in range(3)]).eval()
    assert torch.allclose(votes(x).exp().sum(1), torch.ones(7), atol=0.2)  # a geometric mean: close to 1, not above
    assert torch.equal(predict_labels(votes, x), votes(x).argmax(1))
