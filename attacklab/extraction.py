"""Model extraction (Tramèr et al., USENIX Security 2016): steal a model's parameters or its behaviour through its API.

Equation solving: a logistic-regression API answers p = sigmoid(w.x + b), a softmax-regression API
p_k = exp(w_k.x + b_k) / Z(x), so log p_k is linear in x up to the query's normaliser log Z(x), and
d + 1 linearly independent queries give the weights (up to the usual shift). Rounded answers break
the equalities: the attacker then chooses its queries where the answers are resolvable and sends
more of them, and solves weighted least squares over every resolvable equation (docs/extraction.md).
Learning-based extraction fits a copy to label-only answers, as the inversion's surrogate does.
"""
import math

import torch
import torch.nn.functional as F

from attacklab.data import to_unit
from attacklab.flagtypes import positive_int


def add_extraction_arguments(p):
    """main.py's --attack extraction flags."""
    p.add_argument("--extraction_digits", type=int, nargs=2, default=[3, 5], metavar=("NEG", "POS"),
                   help="--attack extraction: the binary logistic regression's two digits")
    p.add_argument("--extraction_queries", type=positive_int, nargs="+", default=[1, 2, 4], metavar="M",
                   help="--attack extraction: equation-solving budgets against rounded answers, in multiples of d + 1")
    p.add_argument("--extraction_decimals", type=positive_int, nargs="+", default=[2, 3], metavar="R",
                   help="--attack extraction: decimals kept in the regressions' rounded answers")
    p.add_argument("--extraction_budgets", type=positive_int, nargs="+", default=[100, 1000, 10000], metavar="N",
                   help="--attack extraction: label queries for the learning-based copy of the CNN")


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


DESIGNS = ("uniform", "scaled", "adaptive")  # how the attacker chooses its queries (docs/extraction.md)
ROUNDS = 4  # adaptive: rounds of queries, each centred on the balanced point of the estimate before it
PROBES = 16  # scaled and adaptive: queries per probed scale
FLOAT_EPS = 1e-15  # the relative precision of an unrounded float64 answer


def as_classes(p):
    """(n, 1) logistic answers -> (n, 2) [1 - p, p]; softmax answers (n, k) unchanged."""
    return torch.cat([1 - p, p], 1) if p.shape[1] == 1 else p


def equation_weights(p, decimals):
    """Inverse variance of each log-probability the answers reveal; 0 where rounding left 0 or 1 (dropped)."""
    half = 0.0 if decimals is None else 0.5 * 10.0 ** -decimals
    usable = (p > 0) & (p < 1)
    var = half ** 2 / 3 / p.clamp_min(1e-300) ** 2 + FLOAT_EPS ** 2
    return torch.where(usable, 1 / var, torch.zeros_like(p))


def _weighted_lstsq(a, target, weight):
    """argmin_u sum weight * (a u - target)^2 over the rows of positive weight: (d + 1,)."""
    rows = weight > 0
    s = weight[rows].sqrt()
    return torch.linalg.lstsq(a[rows] * s[:, None], (target[rows] * s)[:, None], driver="gelsy").solution[:, 0]


def _cholesky(gram):
    """Cholesky factor of a Gram matrix with a ridge of 1e-10 of its mean diagonal (a class never resolvable stays 0)."""
    ridge = 1e-10 * gram.diagonal().mean() + 1e-12
    return torch.linalg.cholesky(gram + ridge * torch.eye(len(gram), dtype=gram.dtype))


def solve(queries, answers, decimals=None, iters=300, tol=1e-10):
    """Weighted least squares on every resolvable log-probability: (weights (k', d), bias (k',)).

    log p_k = u_k . [x, 1] - log Z(x), with each query's normaliser log Z eliminated: an equation needs
    only its own class's answer to be resolvable, not class 0's. Solved by conjugate gradients with the
    exact per-class blocks as preconditioner; relative to class 0 (what the answers determine).
    """
    p = as_classes(answers)
    a = torch.cat([queries.flatten(1).double(), torch.ones(len(queries), 1, dtype=torch.float64)], 1)  # (n, D)
    wt = equation_weights(p, decimals)
    lp = torch.log(p.clamp_min(1e-300))
    if decimals is None:  # exact answers: every class against class 0, solved exactly
        u = torch.stack([_weighted_lstsq(a, lp[:, k] - lp[:, 0], torch.minimum(wt[:, k], wt[:, 0]))
                         for k in range(1, p.shape[1])])
        return u[:, :-1], u[:, -1]
    wt = wt / wt.max().clamp_min(1e-300)
    total = wt.sum(1, keepdim=True).clamp_min(1e-300)  # (n, 1)
    mean = (wt.sum(1) @ a[:, :-1]) / wt.sum().clamp_min(1e-300)  # (d,): centred columns, a better-conditioned system
    a = torch.cat([a[:, :-1] - mean, a[:, -1:]], 1)
    a_t = a.T.contiguous()  # (D, n): the transposed product is 3x faster from a contiguous copy

    def centred(values):  # (n, k) -> the weighted residual direction once log Z is eliminated
        wv = wt * values
        return wv - wt * wv.sum(1, keepdim=True) / total

    def normal(v):  # v (k - 1, D), class 0 held at 0 -> the normal operator, (k - 1, D)
        z = torch.cat([torch.zeros(len(a), 1, dtype=a.dtype), a @ v.T], 1)
        return (a_t @ centred(z)[:, 1:]).T

    rhs = centred(lp)[:, 1:].T @ a
    blocks = torch.stack([torch.cholesky_inverse(_cholesky(a_t @ (a * (wt[:, k:k + 1] * (1 - wt[:, k:k + 1] / total)))))
                          for k in range(1, p.shape[1])])  # (k - 1, D, D)
    precondition = lambda r: torch.einsum("kij,kj->ki", blocks, r)  # noqa: E731
    v = precondition(rhs)
    r = rhs - normal(v)
    z = precondition(r)
    direction, rz = z, (r * z).sum()
    for _ in range(iters):  # preconditioned conjugate gradients
        hd = normal(direction)
        curvature = (direction * hd).sum()
        if curvature <= 0:  # converged to rounding, or nothing left to fit
            break
        step = rz / curvature
        v, r = v + step * direction, r - step * hd
        if r.norm() <= tol * rhs.norm():
            break
        z = precondition(r)
        rz, rz_old = (r * z).sum(), rz
        direction = z + (rz / rz_old) * direction
    return v[:, :-1], v[:, -1] - v[:, :-1] @ mean


def reference_parameters(model):
    """What equation solving can recover: (w, b) for one output, (w_k - w_0, b_k - b_0) for several."""
    w, b = model.linear.weight, model.linear.bias
    return (w, b) if len(w) == 1 else (w[1:] - w[:1], b[1:] - b[:1])


def choose_scale(api, d, gen, probes=PROBES, halvings=6):
    """The attacker's scale s for queries uniform in [0, s]: halve from 1 until no probe's answer rounds to 0 or 1.

    Returns (s, every probe query, its answers): the probes are equations too.
    """
    queries, answers, scale = [], [], 1.0
    for _ in range(halvings + 1):
        q = torch.rand(probes, d, generator=gen, dtype=torch.float64) * scale
        p = api(q)
        queries.append(q)
        answers.append(p)
        classes = as_classes(p)
        if bool(((classes > 0) & (classes < 1)).all()):
            break
        scale /= 2
    return scale, torch.cat(queries), torch.cat(answers)


def balanced_point(w, b, steps=50):
    """An image in [0, 1] at which the estimated logits are equal (alternating projections from black): (1, d)."""
    x = torch.zeros(1, w.shape[1], dtype=torch.float64)
    pinv = torch.linalg.pinv(w)  # (d, k')
    for _ in range(steps):
        x = (x - (x @ w.T + b) @ pinv.T).clamp(0, 1)
    return x


def query_images(design, api, d, n_queries, gen, decimals):
    """The attacker's n_queries images and the API's answers, chosen by `design` (every probe counted)."""
    if design == "uniform":  # the article's reading: random images, pixels uniform in [0, 1]
        q = torch.rand(n_queries, d, generator=gen, dtype=torch.float64)
        return q, api(q)
    scale, q, p = choose_scale(api, d, gen)
    rounds = 1 if design == "scaled" else ROUNDS
    left = n_queries - len(q)
    for r in range(rounds):
        n = left // (rounds - r)
        left -= n
        centre = torch.zeros(1, d, dtype=torch.float64)
        if r > 0:  # adaptive: around the point the estimate so far calls balanced
            w, b = solve(q, p, decimals, iters=30)
            centre = balanced_point(w, b)
        offsets = torch.rand(n, d, generator=gen, dtype=torch.float64) * scale
        new = (centre + offsets if r == 0 else centre + 2 * offsets - scale).clamp(0, 1)
        q, p = torch.cat([q, new]), torch.cat([p, api(new)])
    return q, p


def extract_linear(model, n_queries, seed, decimals=None, design="uniform"):
    """Equation-solving extraction with n_queries chosen by `design`: metrics and the stolen (w, b)."""
    api = ProbabilityAPI(model, decimals)
    gen = torch.Generator().manual_seed(seed)
    queries, answers = query_images(design, api, model.linear.in_features, n_queries, gen, decimals)
    w, b = solve(queries, answers, decimals)
    true_w, true_b = reference_parameters(model)
    err = max((w - true_w).abs().max().item(), (b - true_b).abs().max().item())
    row = {"queries": api.queries, "max_param_error": err,
           "relative_param_error": err / max(true_w.abs().max().item(), true_b.abs().max().item())}
    if decimals is None:  # exact answers: whether the queries determine the parameters at all
        row["rank"] = int(torch.linalg.matrix_rank(torch.cat([queries, torch.ones(len(queries), 1,
                                                                                  dtype=torch.float64)], 1)))
    return row, (w, b)


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


def _equation_solving(model, own_test, seed, multiples, decimals_list):
    """Exact answers with d + 1 and d queries, then every (design, budget, decimals) on rounded answers."""
    d = model.linear.in_features
    row, (w, b) = extract_linear(model, d + 1, seed)
    row["agreement"] = agreement(model, w, b, own_test)
    fewer, _ = extract_linear(model, d, seed)
    row["with_d_queries"] = fewer
    rounded = []
    for design in DESIGNS:
        for multiple in multiples:
            for decimals in decimals_list:
                r, (w, b) = extract_linear(model, multiple * (d + 1), seed, decimals=decimals, design=design)
                rounded.append({"design": design, "budget": multiple, "decimals": decimals, "queries": r["queries"],
                                "agreement": agreement(model, w, b, own_test), "max_param_error": r["max_param_error"]})
    return row, rounded


def by_design_and_budget(rows):
    """Rounded-answer rows grouped as the tables show them: {(design, budget): {decimals: row}}, in run order."""
    cells = {}
    for r in rows:
        cells.setdefault((r["design"], r["budget"]), {})[r["decimals"]] = r
    return cells


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
        row, rounded[name] = _equation_solving(model, own_test, cfg["seed"], flags["extraction_queries"],
                                               flags["extraction_decimals"])
        row["provider_test_accuracy"] = (api_predictions(model, own_test) == own_labels).double().mean().item()
        out[name] = row
        print(f"extraction {name}: {row['queries']} queries, max parameter error {row['max_param_error']:.2e}, "
              f"agreement {row['agreement']:.4f}")
        for (design, multiple), cells in by_design_and_budget(rounded[name]).items():
            print(f"extraction {name}, {design} queries, {multiple}(d + 1) of them, agreement by decimals: "
                  + ", ".join(f"{d}: {r['agreement']:.4f}" for d, r in cells.items()))
    out["rounded"] = rounded
    own, test01 = data["val"][0], to_unit(xt)
    out["cnn"] = [_cnn_copy(target, own, test01, n, cfg["seed"], device, max_batches) for n in flags["extraction_budgets"]]
    for r in out["cnn"]:
        logger.scalar("extraction/cnn_agreement", r["agreement"], r["budget"])
        print(f"extraction cnn: {r['queries']} label queries, agreement with the target {r['agreement']:.4f}")
    for name, rows in rounded.items():
        for r in rows:
            logger.scalar(f"extraction/{name}_{r['design']}_x{r['budget']}_agreement", r["agreement"], r["decimals"])
    logger.commit()
    extraction_figure(rounded, paths["run"])
    return out
