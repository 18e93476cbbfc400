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


def test_rounding_degrades_the_extraction():
    model = synthetic_regression(1)
    errors = [ex.extract_linear(model, 21, seed=1, decimals=r)[0]["max_param_error"] for r in (1, 3, 6)]
    assert errors[0] > errors[1] > errors[2] > 1e-8  # exact no longer, and worse the coarser the answers
    api = ex.ProbabilityAPI(model, decimals=2)
    p = api(torch.rand(5, 20, dtype=torch.float64))
    assert torch.equal(p, torch.round(p, decimals=2)) and api.queries == 5


def test_a_rounded_zero_or_one_still_gives_finite_equations():
    p = torch.tensor([[0.0], [1.0], [0.5]], dtype=torch.float64)
    assert torch.isfinite(ex._logit_targets(p, decimals=1)).all()
