"""FGSM against a closed form, and equation-solving extraction that is exact with d + 1 queries and not with fewer."""
import pytest
import torch
import torch.nn as nn

from attacklab import extraction as ex
from attacklab.fgsm import fgsm


class Linear(nn.Module):
    """logits = W x + b on flattened images: FGSM's gradient has a closed form."""

    def __init__(self, k=3, d=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(d, k)

    def forward(self, x):
        return self.lin(x.flatten(1))


def closed_form_fgsm(model, x, y, eps, targeted=False):
    """d CE / dx = W^T (softmax(Wx + b) - onehot(y)); one signed step, clipped."""
    w, b = model.lin.weight, model.lin.bias
    p = torch.softmax(x.flatten(1) @ w.T + b, 1)
    grad = (p - nn.functional.one_hot(y, w.shape[0]).float()) @ w
    step = eps * grad.sign().view_as(x)
    return (x - step if targeted else x + step).clamp(0, 1)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_the_closed_form_on_a_linear_model(targeted):
    model = Linear()
    x, y = torch.rand(50, 1, 4, 4), torch.randint(0, 3, (50,))
    for eps in (0.0, 0.05, 0.3):
        got = fgsm(model, x, y, eps, targeted=targeted, batch_size=7)  # batching changes nothing
        assert torch.equal(got, closed_form_fgsm(model, x, y, eps, targeted))


def test_fgsm_on_the_real_target_uses_its_eval_mode_gradient():
    import copy
    import bf_mnist as bfm
    torch.manual_seed(0)
    target = bfm.TargetModel().train()  # as the provider leaves it after training: dropout on
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    reference = copy.deepcopy(target).eval()  # dropout off: the gradient of the deployed model
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(reference(xr), y, reduction="sum").backward()
    expected = (x + 0.1 * xr.grad.sign()).clamp(0, 1)
    got = fgsm(target, x, y, 0.1, batch_size=5)
    assert (got != expected).float().mean().item() < 1e-3  # a sign may flip only where a gradient is ~0
    assert torch.equal(got, fgsm(target, x, y, 0.1)) and target.training  # no dropout noise; mode restored


def test_fgsm_known_answer():
    model = Linear(k=2, d=4)
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, -0.1]]))
        model.lin.bias.zero_()
    x = torch.full((1, 1, 2, 2), 0.5)
    # away from class 0: raise the class-1 logit, so each pixel moves by eps in the sign of its weight
    assert torch.allclose(fgsm(model, x, torch.tensor([0]), 0.1).flatten(), torch.tensor([0.6, 0.4, 0.6, 0.4]))
    assert torch.equal(fgsm(model, x, torch.tensor([0]), 0.0), x)
    assert fgsm(model, x, torch.tensor([0]), 0.9).flatten().tolist() == [1.0, 0.0, 1.0, 0.0]  # clipped to [0, 1]


def synthetic_regression(k, d=20, seed=0):
    """A regression API with known, moderate parameters."""
    torch.manual_seed(seed)
    model = ex.LinearModel(d, k)
    with torch.no_grad():
        model.linear.weight.normal_(0, 0.5)
        model.linear.bias.normal_(0, 0.5)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("k", [1, 4])
def test_d_plus_one_queries_recover_the_parameters(k):
    model = synthetic_regression(k)
    row, (w, b) = ex.extract_linear(model, 21, seed=1)
    assert row["queries"] == 21 and row["rank"] == 21
    assert row["max_param_error"] < 1e-6
    true_w, true_b = ex.reference_parameters(model)
    assert w.shape == true_w.shape  # softmax: k - 1 rows, relative to class 0 (the usual shift)
    x = torch.rand(500, 20, dtype=torch.float64)
    assert ex.agreement(model, w, b, x) == 1.0


def test_fewer_queries_leave_the_system_underdetermined():
    model = synthetic_regression(1)
    row, _ = ex.extract_linear(model, 20, seed=1)
    assert row["queries"] == 20 and row["rank"] == 20 and row["max_param_error"] > 1e-3


def mnist_scale_regression(k, seed=0):
    """A 784-input regression whose logits on digit-like images spread over a few units, as one fitted to MNIST."""
    torch.manual_seed(seed)
    model = ex.LinearModel(784, k)
    with torch.no_grad():
        model.linear.weight.normal_(0, 0.3)
        model.linear.bias.normal_(0, 1.0)
    return model.eval().requires_grad_(False)


def digit_like_images(n, seed=0):
    """n images with a fifth of their pixels lit in [0.5, 1], the rest black: (n, 784) float64."""
    gen = torch.Generator().manual_seed(seed)
    lit = torch.rand(n, 784, generator=gen, dtype=torch.float64) < 0.2
    return torch.where(lit, 0.5 + 0.5 * torch.rand(n, 784, generator=gen, dtype=torch.float64), torch.zeros(n, 784, dtype=torch.float64))


@pytest.mark.parametrize("k", [1, 10])
def test_chosen_queries_recover_a_regression_through_answers_rounded_to_3_decimals(k):
    model, images = mnist_scale_regression(k), digit_like_images(2000)
    chosen, (w, b) = ex.extract_linear(model, 4 * 785, seed=1, decimals=3, design="adaptive")
    assert chosen["queries"] == 4 * 785  # every probe counted in the budget
    assert ex.agreement(model, w, b, images) >= 0.99
    if k == 10:  # the article's random images: most of ten classes' answers round to 0
        _, (w, b) = ex.extract_linear(model, 4 * 785, seed=1, decimals=3, design="uniform")
        assert ex.agreement(model, w, b, images) < 0.9


def test_784_exact_queries_leave_784_inputs_underdetermined():
    row, _ = ex.extract_linear(mnist_scale_regression(1), 784, seed=1)
    assert row["rank"] == 784 and row["relative_param_error"] > 1e-3


def test_answers_rounded_to_0_or_1_are_dropped_not_clamped():
    p = torch.tensor([[0.0, 1.0], [0.25, 0.75]], dtype=torch.float64)
    weights = ex.equation_weights(p, decimals=2)
    assert weights[0].tolist() == [0.0, 0.0] and (weights[1] > 0).all()
    assert weights[1, 1] > weights[1, 0]  # the larger probability is the more precise log under rounding
    api = ex.ProbabilityAPI(synthetic_regression(4), decimals=2)
    p = api(torch.rand(5, 20, dtype=torch.float64))
    assert torch.equal(p, torch.round(p, decimals=2)) and api.queries == 5


def test_the_attackers_scale_keeps_its_probes_answers_resolvable():
    model = mnist_scale_regression(10)
    scale, queries, answers = ex.choose_scale(ex.ProbabilityAPI(model, 3), 784, torch.Generator().manual_seed(0))
    assert scale < 1 and len(queries) == len(answers) and queries.max() <= 1
    last = answers[-ex.PROBES:]
    assert ((last > 0) & (last < 1)).all() and not ((answers[:ex.PROBES] > 0) & (answers[:ex.PROBES] < 1)).all()
