"""Model extraction (Tramèr et al., USENIX Security 2016): steal a model's parameters or its behaviour through its API.

Equation solving: a logistic-regression API answers p = sigmoid(w.x + b), so logit(p) = w.x + b is
linear in x, and d + 1 linearly independent queries give w and b. A softmax-regression API answers
p_k, and log(p_k / p_0) = (w_k - w_0).x + (b_k - b_0): the same system per class, the weights
recovered up to the usual shift. Rounded answers break the equalities. Learning-based extraction
fits a copy to label-only answers, as the inversion's surrogate does.
"""
import math

import torch
import torch.nn.functional as F

from attacklab.data import to_unit


class LinearModel(torch.nn.Module):
    """Logistic (k = 1) or softmax (k > 1) regression on flattened 28x28 images, in float64."""

    def __init__(self, d, k):
        super().__init__()
        self.linear = torch.nn.Linear(d, k, dtype=torch.float64)

    def forward(self, x):
        return self.linear(x.flatten(1).double())


def train_linear(images01, labels, k, weight_decay=1e-4, steps=200):
    """The provider's regression, fitted by L-BFGS on cross-entropy with L2: binary for k = 1."""
    torch.manual_seed(0)
    model = LinearModel(images01[0].numel(), k)
    x, y = images01.flatten(1).double(), labels
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        out = model(x)
        loss = (F.binary_cross_entropy_with_logits(out[:, 0], y.double()) if k == 1 else F.cross_entropy(out, y))
        loss = loss + weight_decay * model.linear.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return model.eval().requires_grad_(False)


class ProbabilityAPI:
    """Answers the model's probabilities (float64), optionally rounded to `decimals`; counts every query."""

    def __init__(self, model, decimals=None):
        self._model, self.decimals, self.queries = model, decimals, 0

    def __call__(self, x):
        self.queries += len(x)
        out = self._model(x)
        p = torch.sigmoid(out) if out.shape[1] == 1 else F.softmax(out, 1)
        return p if self.decimals is None else torch.round(p, decimals=self.decimals)


def _logit_targets(p, decimals):
    """The linear quantities the answers reveal: logit(p) for one output, log(p_k / p_0) for several.

    A rounded 0 or 1 has no finite logit: it is replaced by the nearest value the rounding allows.
    """
    if decimals is not None:
        half = 0.5 * 10.0 ** -decimals
        p = p.clamp(half, 1 - half)
    if p.shape[1] == 1:
        return torch.log(p) - torch.log1p(-p)  # (n, 1)
    return torch.log(p[:, 1:]) - torch.log(p[:, :1])  # (n, k - 1)


def solve(queries, answers, decimals=None):
    """Least squares for [X 1] theta = targets: (weights (k', d), bias (k',), rank of the system)."""
    a = torch.cat([queries.flatten(1).double(), torch.ones(len(queries), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, _logit_targets(answers, decimals), driver="gelsd")
    rank = int(torch.linalg.matrix_rank(a))
    return sol.solution[:-1].T, sol.solution[-1], rank


def reference_parameters(model):
    """What equation solving can recover: (w, b) for one output, (w_k - w_0, b_k - b_0) for several."""
    w, b = model.linear.weight, model.linear.bias
    return (w, b) if len(w) == 1 else (w[1:] - w[:1], b[1:] - b[:1])


def extract_linear(model, n_queries, seed, decimals=None, scale=1.0):
    """Equation-solving extraction with n_queries random images in [0, scale]: metrics and the stolen (w, b)."""
    api = ProbabilityAPI(model, decimals)
    gen = torch.Generator().manual_seed(seed)
    queries = torch.rand(n_queries, model.linear.in_features, generator=gen, dtype=torch.float64) * scale
    w, b, rank = solve(queries, api(queries), decimals)
    true_w, true_b = reference_parameters(model)
    err = max((w - true_w).abs().max().item(), (b - true_b).abs().max().item())
    return {"queries": api.queries, "rank": rank, "max_param_error": err,
            "relative_param_error": err / max(true_w.abs().max().item(), true_b.abs().max().item())}, (w, b)


def linear_predictions(w, b, images01):
    """Labels of the stolen regression: the same decision as the API's (sign of the logit, or argmax)."""
    z = images01.flatten(1).double() @ w.T + b
    if len(w) == 1:
        return (z[:, 0] > 0).long()
    return torch.cat([torch.zeros(len(z), 1, dtype=z.dtype), z], 1).argmax(1)


def api_predictions(model, images01):
    """The API's decision on images (argmax of its probabilities)."""
    out = model(images01)
    return (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)


def agreement(model, w, b, images01):
    """Fraction of images on which the stolen regression decides as the API does."""
    return (linear_predictions(w, b, images01) == api_predictions(model, images01)).double().mean().item()


def epochs_for(n, batch_size=64, min_steps=600, max_epochs=200):
    """Epochs for a learning-based copy from n labelled images: at least min_steps optimiser steps."""
    return max(3, min(max_epochs, math.ceil(min_steps / math.ceil(n / batch_size))))


def attacker_images(images_uint8, n, seed):
    """The first n of the attacker's images in a seeded order."""
    order = torch.randperm(len(images_uint8), generator=torch.Generator().manual_seed(seed))
    return images_uint8[order[:n]]


def to_float(images_uint8):
    """uint8 (N, 28, 28) -> float64 (N, 784) in [0, 1], the regression's input."""
    return to_unit(images_uint8).double().flatten(1)


def _equation_solving(model, x_test, seed):
    """d + 1 queries (exact), d queries (underdetermined) and rounded answers for one regression API."""
    d = model.linear.in_features
    row, (w, b) = extract_linear(model, d + 1, seed)
    row["agreement"] = agreement(model, w, b, x_test)
    fewer, _ = extract_linear(model, d, seed)
    row["with_d_queries"] = fewer
    rounded = []
    for decimals in range(1, 7):
        r, (w, b) = extract_linear(model, d + 1, seed, decimals=decimals)
        rounded.append({"decimals": decimals, "queries": r["queries"], "agreement": agreement(model, w, b, x_test),
                        "max_param_error": r["max_param_error"]})
    return row, rounded


def _cnn_copy(target, own, test01, budget, seed, device, max_batches):
    """Learning-based extraction of the CNN through its label-only API with `budget` of the attacker's images."""
    import bf_mnist as bfm
    from attacklab.api import PredictionAPI
    from attacklab.classifiers import predict_labels
    api = PredictionAPI(target, budget=budget)
    images = attacker_images(own, budget, seed)
    copy, _ = bfm.train_surrogate(images, api(to_unit(images)), seed, device, epochs_for(budget), max_batches=max_batches)
    agree = (predict_labels(copy, test01) == predict_labels(target, test01)).float().mean().item()
    return {"budget": budget, "queries": api.queries, "agreement": agree}


def run_extraction(cfg, data, target, paths, device, logger, max_batches=None):
    """--attack extraction: equation solving on two regression APIs (exact and rounded), and a copy of the CNN."""
    from attacklab.report import extraction_figure
    flags = cfg["flags"]
    (x, y), (xt, yt) = data["train"], data["test"]
    if max_batches:  # dry run: small regressions, few test images
        x, y, xt, yt = x[:300], y[:300], xt[:200], yt[:200]
    lo, hi = flags["extraction_digits"]
    keep, keep_t = (y == lo) | (y == hi), (yt == lo) | (yt == hi)
    x_test = to_float(xt)
    providers = {  # name: (the provider's regression, its own test images and labels)
        "binary": (train_linear(to_float(x[keep]), (y[keep] == hi).long(), 1), x_test[keep_t], (yt[keep_t] == hi).long()),
        "softmax": (train_linear(to_float(x), y, 10, steps=5 if max_batches else 200), x_test, yt)}
    out, rounded = {}, {}
    for name, (model, own_test, own_labels) in providers.items():
        row, rounded[name] = _equation_solving(model, x_test, cfg["seed"])
        row["provider_test_accuracy"] = (api_predictions(model, own_test) == own_labels).double().mean().item()
        out[name] = row
        print(f"extraction {name}: {row['queries']} queries, max parameter error {row['max_param_error']:.2e}, "
              f"agreement {row['agreement']:.4f}")
    out["rounded"] = rounded
    own, test01 = data["val"][0], to_unit(xt)
    out["cnn"] = [_cnn_copy(target, own, test01, n, cfg["seed"], device, max_batches) for n in flags["extraction_budgets"]]
    for r in out["cnn"]:
        logger.scalar("extraction/cnn_agreement", r["agreement"], r["budget"])
        print(f"extraction cnn: {r['queries']} label queries, agreement with the target {r['agreement']:.4f}")
    for name, rows in rounded.items():
        for r in rows:
            logger.scalar(f"extraction/{name}_rounded_agreement", r["agreement"], r["decimals"])
    logger.commit()
    extraction_figure(rounded, paths["run"])
    return out
