"""Controls beside every attack result: what the attacker's own data give without the model, and a white-box reference.

- no_leak: the same attack, the same budget, against an API whose answers are a fixed random
  function of the image (a hash of its bytes): no knowledge of the private classes. Its G does not
  depend on the target, so it is cached in DATA_DIR/.cache/no_leak/<key> (no_leak_key) and reused.
- aux_as_labelled: the attacker's images, labelled by the API, taken as samples as they are.
- true_labels (`same` only): the attack with the aux images' real labels instead of the API's.
- ignorant: the same attack against a k-output classifier of the target's architecture trained on k
  letters (A, B, ...), no image of any digit: an API that answers coherently and knows nothing of the
  private digits, so what the recipe draws from its own priors.
- mi_face: Fredrikson et al. 2015, gradient ascent on the input for the target's class probability
  (an attacker with the weights and no data), stopped at p >= 0.99 or when the cost stalls, 1,000 steps at most.
- mi_face_art: the same ascent with ART's MIFace stopping rule at ART's defaults (10,000 steps; tested
  against ART itself in tests/test_mi_face_art.py).
"""
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import bf_mnist as bfm
from attacklab import attack, evaluation
from attacklab.api import PredictionAPI
from attacklab.classifiers import classifier_accuracy, predict_labels, train_classifier_epoch
from attacklab.data import CACHE_DIR, to_unit
from attacklab.report import Logger, save_grid
from attacklab.letters import load_letters
from attacklab.runfolder import REPO
from attacklab.runtime import UserError, seeded_fork, write_json_atomic

CONTROLS = ("no_leak", "aux_as_labelled", "true_labels", "mi_face", "mi_face_art", "ignorant")
IGNORANT_LETTERS = 20000  # rendered with seed 1 (the letters protocol's aux set is seed 0); the first k capitals kept
IGNORANT_EPOCHS = 10
DEFAULT_CONTROLS = {"same": ("aux_as_labelled", "mi_face_art", "mi_face"),
                    "disjoint": ("no_leak", "aux_as_labelled", "mi_face_art", "mi_face"),
                    "letters": ("no_leak", "aux_as_labelled", "mi_face_art", "mi_face")}


def _image_keys(images01):
    """One byte string per image: its pixels as the 8-bit image the API receives."""
    q = (images01.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8).reshape(len(images01), -1)
    return [bytes(row.numpy()) for row in q]


class NoLeakAPI(PredictionAPI):
    """Answers int(sha256(image bytes)) mod k: a fixed function of the image that knows nothing of any class.

    In the probability formats it answers that label as a one-hot vector.
    """

    def __init__(self, n_classes, budget=None, output="label"):
        super().__init__(None, budget)
        self.output = output

        def answer(x):
            labels = torch.tensor([int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % n_classes
                                   for key in _image_keys(x)], dtype=torch.int64)
            return labels if output == "label" else F.one_hot(labels, n_classes).float()
        self._answer = answer


class TrueLabelAPI(PredictionAPI):
    """Answers the real label of each auxiliary image (the experimenter's labels): the true-labels control."""

    def __init__(self, aux_images, aux_labels, budget=None):
        super().__init__(None, budget)
        table = dict(zip(_image_keys(to_unit(aux_images)), aux_labels.tolist()))

        def answer(x):
            keys = _image_keys(x)
            if any(k not in table for k in keys):
                raise UserError("the true_labels control answers only the auxiliary images; "
                                "drop it from --controls for attacks that query other images")
            return torch.tensor([table[k] for k in keys], dtype=torch.int64)
        self._answer = answer


def aux_as_labelled(aux_images, api_labels, per_class, k, seed=0):
    """(images in [0, 1], requested = the API's labels): up to per_class aux images of each answered class."""
    order = torch.randperm(len(aux_images), generator=torch.Generator().manual_seed(seed))
    pick = torch.cat([order[api_labels[order] == c][:per_class] for c in range(k)])
    return to_unit(aux_images[pick]), api_labels[pick]


# MI-FACE's stopping rules, on the cost c = 1 - p_y after each step, per image (window: its last W costs)
MI_FACE_RULES = {
    # Fredrikson et al.: stop once p_y >= threshold or the cost no longer falls below the window's worst
    "fredrikson": lambda cost, worst, threshold: (cost > 1 - threshold) & (cost < worst),
    # ART 1.20's MIFace with its default batch_size=1: continue while cost <= threshold or cost >= the window's
    # worst, i.e. stop once p_y < 1 - threshold and the cost improved; a class under 1 % at zeros takes one step
    "art": lambda cost, worst, threshold: (cost <= threshold) | (cost >= worst),
}
MI_FACE_SETTINGS = {"mi_face": dict(rule="fredrikson", max_iter=1000),  # this project's loop
                    "mi_face_art": dict(rule="art", max_iter=10000)}  # ART's MIFace at its defaults


def mi_face(target, requested, max_iter=1000, learning_rate=0.1, threshold=0.99, window=100, rule="fredrikson"):
    """MI-FACE from zeros: x += lr * d p_y(x) / dx, clipped to [0, 1], per image while MI_FACE_RULES[rule] holds.
    Returns images in [0, 1].

    From zeros every request of a class follows the same path, so each class is inverted once and repeated.
    """
    classes, index = torch.unique(requested, return_inverse=True)
    return _mi_face_from_zeros(target, classes, max_iter, learning_rate, threshold, window,
                               MI_FACE_RULES[rule])[index]


def _mi_face_from_zeros(target, classes, max_iter, learning_rate, threshold, window, keep_going):
    """One MI-FACE image per class in `classes`; only the images still going are computed.

    The forward pass that scores a step is the next step's forward pass too (one forward per step, not two);
    when an image stops, the rest are passed forward again as a batch of their own, as before.
    """
    device = next(target.parameters()).device
    target = target.eval()
    x = torch.zeros(len(classes), 1, 28, 28, device=device)
    y = classes.to(device)
    going = torch.arange(len(x), device=device)  # indices of the images still ascending
    costs = torch.full((len(x), window), float("inf"), device=device)
    xi = x.clone().requires_grad_(True)
    logits = target(xi)
    for i in range(max_iter):
        yi = y[going]
        p = F.softmax(logits, 1).gather(1, yi[:, None]).squeeze(1)
        grad, = torch.autograd.grad(p.sum(), xi)
        with torch.no_grad():
            step = (xi + learning_rate * grad).clamp(0, 1)
            moved = (step != xi).flatten(1).any(1)  # an image that did not move never will: its path is fixed
            x[going] = step
        xi = step.requires_grad_(True)
        logits = target(xi)
        with torch.no_grad():
            cost = 1 - F.softmax(logits, 1).gather(1, yi[:, None]).squeeze(1)
            keep = keep_going(cost, costs[going].max(1).values, threshold) & moved
            costs[going, i % window] = cost
        going = going[keep]
        if len(going) == 0:
            break
        if not keep.all():
            xi = x[going].clone().requires_grad_(True)
            logits = target(xi)
    return x.cpu()


def validate_controls(names, protocol, variant):
    """One sentence for a control that cannot run with this protocol or variant."""
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise UserError(f"--controls {' '.join(unknown)}: choose from {', '.join(CONTROLS)} (or none)")
    if "true_labels" in names and protocol != "same":
        raise UserError("--controls true_labels needs --protocol same: in other protocols the attacker's "
                        "images are not of the private classes, so no true private label exists")
    if "ignorant" in names and protocol == "letters":
        raise UserError("--controls ignorant trains its target on letters, which --protocol letters gives the "
                        "attacker: drop ignorant or choose another protocol")
    if variant == "blog" and "true_labels" in names:
        raise UserError("--controls true_labels answers the auxiliary images only, but --variant blog sends the API "
                        "its fakes too; drop true_labels or the blog variant")


def _generative(name, api, cfg, ctx):
    """The attack rerun against another API into RUN_DIR/controls/<name>/, judged like the attack."""
    sub = {key: ctx["paths"]["run"] / "controls" / name / key for key in ("models", "samples", "tensorboard")}
    for folder in sub.values():
        folder.mkdir(parents=True, exist_ok=True)
    sub["run"] = ctx["paths"]["run"]
    print(f"control {name}: the same attack against another API")
    logger = Logger(sub["tensorboard"])
    try:
        steps = attack.run_inversion(attack.attacker_config(cfg), api, ctx["aux"][0], attack.attacker_paths(sub),
                                     ctx["device"], logger, ctx["max_batches"])
        g = attack.complete(steps).g
    finally:
        logger.close()
    metrics, _ = evaluation.final_evaluation(cfg, g, ctx["target"], ctx["evaluator"], sub, ctx["device"], ctx["aux"][0],
                                             ctx["judge"])
    return dict(metrics, queries=api.queries)


def _link_or_copy(source, dest):
    """A hard link where the file system allows (G's checkpoint is 0.55 GB; files are replaced, never rewritten)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def no_leak_key(cfg, aux_images, device):
    """What determines the no-leak control's G (not the target): the attacker's config and images, the API, the
    code, the device kind and torch. A hex digest."""
    code = hashlib.sha256()
    for path in sorted([*(REPO / "attacklab").glob("*.py"), REPO / "bf_mnist.py"]):
        code.update(path.read_bytes())
    flags = cfg["flags"]
    parts = {"attacker": attack.attacker_config(cfg), "api": [flags["query_budget"], flags["api_output"]],
             "aux": hashlib.sha256(aux_images.numpy().tobytes()).hexdigest(), "code": code.hexdigest(),
             "device": torch.device(device).type, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _no_leak(cfg, ctx):
    """The no-leak control; its trained G is cached under the data folder and reused by any run with the same key."""
    flags = cfg["flags"]
    cache = Path(flags["data_dir"]) / CACHE_DIR / "no_leak" / no_leak_key(cfg, ctx["aux"][0], ctx["device"])
    own = ctx["paths"]["run"] / "controls" / "no_leak"
    if (cache / "models" / "gan_last.pt").is_file() and not (own / "models" / "gan_last.pt").is_file():
        print(f"control no_leak: its G does not depend on the target; the one trained for this attacker is in {cache}")
        for part in ("models", "samples"):
            shutil.copytree(cache / part, own / part, dirs_exist_ok=True, copy_function=_link_or_copy)
    metrics = _generative("no_leak", NoLeakAPI(attack.n_classes(cfg), flags["query_budget"], flags["api_output"]),
                          cfg, ctx)
    if not cache.exists():
        staging = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        for part in ("models", "samples"):
            shutil.copytree(own / part, staging / part, dirs_exist_ok=True, copy_function=_link_or_copy)
        try:
            os.replace(staging, cache)
        except OSError:  # another run stored the same G first
            shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _true_labels(cfg, ctx):
    return _generative("true_labels", TrueLabelAPI(*ctx["aux"], cfg["flags"]["query_budget"]), cfg, ctx)


def _aux_as_labelled(cfg, ctx):
    k = attack.n_classes(cfg)
    api_labels = predict_labels(ctx["target"], to_unit(ctx["aux"][0]))  # what the API answered for them
    images, requested = aux_as_labelled(ctx["aux"][0], api_labels, cfg["flags"]["n_eval_per_class"], k)
    return evaluation.judge_images(images, requested, ctx["target"], ctx["evaluator"], evaluation.private_digits(cfg),
                                   judge=ctx["judge"])


def _mi_face(name, cfg, ctx):
    _, requested = evaluation.eval_requests(cfg, ctx["device"])
    settings = dict(MI_FACE_SETTINGS[name], **({"max_iter": 20} if cfg["flags"]["dry_run"] else {}))
    images = mi_face(ctx["target"], requested, **settings)
    per_class = cfg["flags"]["n_eval_per_class"]
    save_grid(images[::per_class], ctx["paths"]["run"] / "controls" / f"{name}.png", nrow=1)  # one per class
    return evaluation.judge_images(images, requested, ctx["target"], ctx["evaluator"], evaluation.private_digits(cfg),
                                   ctx["aux"][0], ctx["judge"])


def ignorant_target(k, cache_dir, device, dry_run=False, seed=0):
    """A TargetModel with k outputs trained on the capitals A, B, ... (k of them): (model, held-out accuracy)."""
    images, letters = load_letters(cache_dir, 200 if dry_run else IGNORANT_LETTERS, seed=1)
    keep = letters < k  # LETTERS starts with the capitals
    images, labels = images[keep], letters[keep]
    cut = len(images) * 4 // 5
    with seeded_fork(seed, device):
        model = bfm.TargetModel(n_classes=k).to(device)
        optimizer = torch.optim.Adam(model.parameters())
        for _ in range(1 if dry_run else IGNORANT_EPOCHS):
            train_classifier_epoch(model, optimizer, images[:cut], labels[:cut], 64, device,
                                   1 if dry_run else None, desc="ignorant target")
    model.eval()
    return model, classifier_accuracy(model, images[cut:], labels[cut:])


def _ignorant(cfg, ctx):
    flags = cfg["flags"]
    model, accuracy = ignorant_target(attack.n_classes(cfg), Path(flags["data_dir"]) / CACHE_DIR, ctx["device"],
                                      flags["dry_run"], cfg["seed"])
    api = PredictionAPI(model, flags["query_budget"], flags["api_output"], flags["api_decimals"])
    return dict(_generative("ignorant", api, cfg, ctx), ignorant_target_letter_accuracy=accuracy)


CONTROL_FNS = {"ignorant": _ignorant, "no_leak": _no_leak, "aux_as_labelled": _aux_as_labelled, "true_labels": _true_labels,
               "mi_face": lambda cfg, ctx: _mi_face("mi_face", cfg, ctx),
               "mi_face_art": lambda cfg, ctx: _mi_face("mi_face_art", cfg, ctx)}


def run_controls(cfg, target, evaluator, aux, paths, device, max_batches=None, reuse=True, save=True, judge=None,
                 seconds=None):
    """Every control of the run's config: {name: metrics}, each kept in RUN_DIR/controls/<name>.json.

    reuse: read a control finished earlier (a resumed run); save: write what was computed; seconds: a dict that
    gets each computed control's wall time as "control_<name>".
    """
    ctx = {"target": target, "evaluator": evaluator, "aux": aux, "paths": paths, "device": device, "judge": judge,
           "max_batches": max_batches if max_batches else (1 if cfg["flags"]["dry_run"] else None)}
    rows = {}
    for name in cfg["flags"]["controls"]:
        path = paths["run"] / "controls" / f"{name}.json"
        if reuse and path.is_file():
            rows[name] = json.loads(path.read_text())
            continue
        path.parent.mkdir(exist_ok=True)
        t0 = time.time()
        rows[name] = CONTROL_FNS[name](cfg, ctx)
        if seconds is not None:
            seconds[f"control_{name}"] = time.time() - t0
        if save:
            write_json_atomic(rows[name], path)
    return rows
