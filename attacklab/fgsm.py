"""FGSM adversarial examples (Goodfellow, Shlens & Szegedy 2014): x' = clip(x + eps * sign(grad_x loss), 0, 1).

White box on the target, the same images judged by the evaluator (transfer), and the black-box
attack an API user can run: FGSM on its own surrogate (fitted to the API's labels of its images),
sent to the target.
"""
import torch
import torch.nn.functional as F

from attacklab.classifiers import predict_labels
from attacklab.data import to_unit

DEFAULT_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def fgsm(model, images01, labels, eps, targeted=False, batch_size=1000):
    """Adversarial images: one signed-gradient step of size eps on the cross-entropy, clipped to [0, 1].

    Untargeted: away from `labels` (x + eps * sign). Targeted: towards `labels` (x - eps * sign).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images01), batch_size):
        x = images01[i:i + batch_size].to(device).requires_grad_(True)
        loss = F.cross_entropy(model(x), labels[i:i + batch_size].to(device))
        grad, = torch.autograd.grad(loss, x)
        step = -eps * grad.sign() if targeted else eps * grad.sign()
        out.append((x + step).clamp(0, 1).detach().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model, images01, labels):
    """Fraction of images the model labels correctly."""
    return (predict_labels(model, images01) == labels).float().mean().item()


def sweep(target, evaluator_model, surrogate, api, test, eps_list, targeted_class=None):
    """Accuracy under attack per eps: white box, transfer to the evaluator, black box via the surrogate.

    The black-box attacker labels each clean test image through the API (its loss needs a label) and
    sends every adversarial image to the API; both count as queries. With targeted_class, also the
    fraction of white-box targeted images the target labels as that class.
    """
    images, labels = to_unit(test[0]), test[1]
    api_labels = api(images)  # the attacker's labels for its own FGSM loss
    out = {"white_box": [], "transfer_to_evaluator": [], "black_box_via_surrogate": []}
    if targeted_class is not None:
        out["targeted_success"] = []
    for eps in eps_list:
        white = fgsm(target, images, labels, eps)
        out["white_box"].append(accuracy(target, white, labels))
        out["transfer_to_evaluator"].append(accuracy(evaluator_model, white, labels))
        black = fgsm(surrogate, images, api_labels, eps)
        out["black_box_via_surrogate"].append((api(black) == labels).float().mean().item())
        if targeted_class is not None:
            goal = torch.full_like(labels, targeted_class)
            hit = predict_labels(target, fgsm(target, images, goal, eps, targeted=True)) == goal
            out["targeted_success"].append(hit[labels != targeted_class].float().mean().item())
    return out


def example_rows(target, test, eps, n=10):
    """(clean images, adversarial images, target's clean answers, target's adversarial answers) for n test images."""
    images, labels = to_unit(test[0][:n]), test[1][:n]
    adv = fgsm(target, images, labels, eps)
    return images, adv, predict_labels(target, images), predict_labels(target, adv)


def run_fgsm(cfg, data, target, evaluator, paths, device, logger, max_batches=None):
    """--attack fgsm: the eps sweep on the test split, its plot and example grid; returns results['fgsm']."""
    import bf_mnist as bfm
    from attacklab.api import PredictionAPI
    from attacklab.report import fgsm_figures
    flags = cfg["flags"]
    test = data["test"] if max_batches is None else (data["test"][0][:200], data["test"][1][:200])
    api = PredictionAPI(target, budget=flags["query_budget"])
    own = data["val"][0]  # the attacker's own images: public, and not the test images it attacks
    surrogate, fit = bfm.train_surrogate(own, api(to_unit(own)), cfg["seed"] + 4, device, 3, max_batches=max_batches)
    eps = [float(e) for e in flags["fgsm_eps"]]
    acc = sweep(target, evaluator.model, surrogate, api, test, eps, flags["fgsm_target"])
    for i, e in enumerate(eps):
        for key, values in acc.items():
            logger.scalar(f"fgsm/{key}", values[i], i)
    logger.commit()
    shown = max(e for e in eps) if eps else 0.0
    fgsm_figures(eps, acc, *example_rows(target, test, shown), shown, paths["run"])
    for i, e in enumerate(eps):
        print(f"eps {e:.2f}: " + ", ".join(f"{k} {v[i]:.3f}" for k, v in acc.items()))
    cost = query_cost(len(own), len(test[0]), len(eps))
    assert cost["total"] == api.queries, "the black-box attack's queries are not the ones counted"
    print(f"black box: {cost['surrogate']} queries to fit the surrogate, {cost['clean_labels']} to label the clean "
          f"test images, {cost['per_eps']} per eps: {cost['one_eps']} for one eps, {cost['total']} for the sweep")
    return {"eps": eps, "accuracy": acc, "queries": api.queries, "query_cost": cost, "surrogate_fit": fit,
            "targeted_class": flags["fgsm_target"], "example_eps": shown}


def query_cost(n_own, n_test, n_eps):
    """The black-box attack's API queries: surrogate fit, clean labels, and one batch of adversarial images per eps."""
    return {"surrogate": n_own, "clean_labels": n_test, "per_eps": n_test, "one_eps": n_own + 2 * n_test,
            "total": n_own + n_test + n_eps * n_test}
