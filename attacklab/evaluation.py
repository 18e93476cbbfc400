"""The experimenter's stage: judges what the attack produced with the target and the independent evaluator.

It holds what the attacker never sees (the target's weights, the evaluator, the private splits)
and builds results.json, for a finished run and for --evaluate alike.
"""
import json
from pathlib import Path

import torch

import bf_mnist as bfm
from attacklab import sampling
from attacklab.attack import n_classes, sample_noise
from attacklab.classifiers import predict_labels
from attacklab.data import CACHE_DIR, IMAGE_SIZE, N_CLASSES, to_unit
from attacklab.evaluator import load_evaluator, reference_rows
from attacklab.judge import (judge_metrics, judge_outputs, judge_path, judge_splits, load_judge, private_reference,
                             reference_features)
from attacklab.metrics import accuracy_by_class, scalar_metrics
from attacklab.protocols import protocol_for
from attacklab.report import save_grid, write_report
from attacklab.runtime import write_json_atomic
from attacklab.tables import cells_below, pooled_by_digit, seeds_note

MONITOR = "monitor.json"


def eval_requests(cfg, device):
    """(noise, requested classes) of the attack metrics, the same every epoch and at the end."""
    requested = sampling.grid_labels(cfg["flags"]["n_eval_per_class"], n_classes(cfg))
    return sampling.fixed_noise(len(requested), cfg["flags"]["dim_initial_vec"], cfg["seed"] + 3, device), requested


def attack_accuracies(images, requested, target, evaluator, digits):
    """Accuracy of the requested class (target label 0..k-1) as judged by the target, and by the (10-class)
    evaluator against its real digit, digits[requested]; per-class lists in the order of digits."""
    acc_t, per_t = accuracy_by_class(predict_labels(target, images), requested, len(digits))
    asked = torch.tensor(digits)[requested]
    acc_e, per_e = accuracy_by_class(predict_labels(evaluator.model, images), asked, digits)
    return {"accuracy_by_target": acc_t, "per_class_accuracy_by_target": per_t,
            "accuracy_by_evaluator": acc_e, "per_class_accuracy_by_evaluator": per_e}


def private_digits(cfg):
    """The real digits of the target's labels 0..k-1 (the experimenter's knowledge)."""
    return protocol_for(cfg["flags"]).private_classes


class Monitor:
    """The experimenter's per-epoch look at G (handed over by the attack after each epoch): the attack accuracies
    of G's fixed-noise samples by the target and the evaluator, in RUN_DIR/monitor.json and TensorBoard."""

    def __init__(self, cfg, target, evaluator, device, run_dir, logger):
        self.noise, self.requested = eval_requests(cfg, device)
        self.cfg, self.target, self.evaluator, self.logger = cfg, target, evaluator, logger
        self.path = Path(run_dir) / MONITOR
        self.records = read_monitor(run_dir)  # a resumed run keeps its earlier epochs

    def __call__(self, epoch, g):
        images = sampling.generator_images(g, self.requested, self.noise, bfm.RESCALE_OUTPUT[self.cfg["flags"]["variant"]])
        metrics = scalar_metrics(attack_accuracies(images, self.requested, self.target, self.evaluator,
                                                   private_digits(self.cfg)))
        self.records = [r for r in self.records if r["epoch"] < epoch] + [{"epoch": epoch, **metrics}]
        write_json_atomic(self.records, self.path)
        for key, value in metrics.items():
            self.logger.scalar(f"attack/{key}", value, epoch)
        flags = self.cfg["flags"]
        if epoch % flags["checkpoint_every"] == 0 or epoch == flags["epochs_gan"]:
            self.logger.commit()  # as the attack does: only what a checkpoint stands behind
        print(f"  epoch {epoch}: " + " ".join(f"{k.replace('accuracy_by_', 'acc/')} {v:.3f}" for k, v in metrics.items()))


def read_monitor(run_dir):
    """The monitor's records of a run ([] when it has none)."""
    path = Path(run_dir) / MONITOR
    return json.loads(path.read_text()) if path.is_file() else []


def with_monitor(history, records):
    """The attack's per-epoch losses with the monitor's accuracies of the same epoch (older runs kept both in one)."""
    by_epoch = {r["epoch"]: r for r in records}
    return [dict(h, **by_epoch.get(h["epoch"], {})) for h in history]


def judge_images(images, requested, target, evaluator, digits, aux_images=None, judge=None):
    """Every metric of images in [0, 1] meant as the requested target labels (digits[requested]); knn_aux when
    the aux images are given, the held-out judge's numbers (metrics["judge"]) when a judge is."""
    metrics = attack_accuracies(images, requested, target, evaluator, digits)
    asked = torch.tensor(digits)[requested]
    metrics.update({key: v for key, v in evaluator.metrics(images, asked, digits).items() if key not in metrics})
    if aux_images is not None:
        metrics["knn_aux"] = evaluator.nearest(images, to_unit(aux_images))
    if judge is not None:
        metrics["judge"] = judge.metrics(images, asked)
        with_evaluator(metrics["judge"], judge, evaluator, images, asked)
    return metrics


def with_evaluator(judged, judge, evaluator, images, asked):
    """Add to the judge's metrics how often the judge and the evaluator both read the asked digit (overall and per
    digit): two networks of different make fooled the same way by a texture is rarer than one."""
    both = ((judge_outputs(judge.model, images)[1] == asked) & (predict_labels(evaluator.model, images) == asked)).float()
    judged["accuracy_with_evaluator"] = both.mean().item() if len(both) else float("nan")
    for d, per in judged["per_digit"].items():
        mine = asked == int(d)
        per["accuracy_with_evaluator"] = both[mine].mean().item() if mine.any() else float("nan")
    return judged


class HeldoutJudge:
    """The held-out judge with the features of the private train images each digit's samples are compared with."""

    def __init__(self, model, info, digits, reference):
        self.model, self.info, self.digits = model, info, tuple(digits)
        self.reference = reference_features(model, reference)  # once, not per judged set

    def metrics(self, images01, asked_digits):
        return judge_metrics(self.model, images01, asked_digits, self.digits, self.reference)


def judge_stage(flags, data, device, digits):
    """The held-out judge (--judge heldout) or None: (judge, its info with reference rows for results.json).

    Reference rows: other private train images of each digit (the ceiling) and uniform noise (the floor).
    """
    if flags["judge"] == "none":
        return None, None
    splits = judge_splits(flags["protocol"], flags["aux_split"])
    path = judge_path(flags["data_dir"], flags["judge_seed"], splits, flags["dry_run"], flags["model_dir"])
    model, info = load_judge(data, splits, flags["judge_seed"], device, path, dry_run=flags["dry_run"])
    per_digit = flags["n_eval_per_class"]
    picks = private_reference(data["train"], digits, 2 * per_digit)  # first half: the reference, second: the ceiling
    judge = HeldoutJudge(model, info, digits, {d: x[:per_digit] for d, x in picks.items()})
    ceiling = {d: x[per_digit:] for d, x in picks.items()}
    real = torch.cat(list(ceiling.values()))
    real_asked = torch.cat([torch.full((len(x),), d) for d, x in ceiling.items()])
    asked = torch.tensor(digits).repeat_interleave(per_digit)
    noise = torch.rand(len(asked), 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    reference = {"real_private_other": _headline(judge.metrics(to_unit(real), real_asked)),
                 "uniform_noise": _headline(judge.metrics(noise, asked))}
    overall, per = _private_accuracy(info, data["train"][1], digits, flags["dry_run"])
    return judge, dict(info, path=str(path), accuracy_on_private_train=overall,
                       per_digit_accuracy_on_private_train=per, reference=reference)


def _private_accuracy(info, train_labels, digits, dry_run):
    """The judge's accuracy on the private train split, from its per-digit accuracy on the train split: (overall,
    per digit). A dry run's judge was measured on the first 200 train images."""
    counts = torch.bincount(train_labels[:200] if dry_run else train_labels, minlength=N_CLASSES)
    per = [info["per_digit_accuracy_on_train_split"][d] for d in digits]
    n = [counts[d].item() for d in digits]
    return sum(a * k for a, k in zip(per, n) if k) / max(sum(n), 1), per


def _headline(m):
    """A judge row without its per-digit detail."""
    return {k: v for k, v in m.items() if k not in ("per_digit", "counts")}


def final_evaluation(cfg, g, target, evaluator, paths, device, aux_images=None, judge=None):
    """Metrics on n_eval_per_class samples per class from fixed noise, and the final grid: (metrics, grid images)."""
    rescale = bfm.RESCALE_OUTPUT[cfg["flags"]["variant"]]
    noise, requested = eval_requests(cfg, device)
    images = sampling.generator_images(g, requested, noise, rescale)
    metrics = judge_images(images, requested, target, evaluator, private_digits(cfg), aux_images, judge)
    grid_images = sampling.generator_images(g, sampling.grid_labels(10, n_classes(cfg)), sample_noise(cfg, device),
                                            rescale)
    save_grid(grid_images, paths["samples"] / "final_grid.png")
    return metrics, grid_images


def surrogate_report(surrogate, info, target, val_images):
    """The surrogate's fit, and (experimenter's view, not the attacker's) how often it agrees with the target."""
    if surrogate is None:
        return None
    images = to_unit(val_images)
    agree = (predict_labels(surrogate, images) == predict_labels(target, images)).float().mean().item()
    return dict(info, agreement_with_target_on_val=agree)


def build_results(target_info, cfg, queries, metrics, surrogate, reference, evaluator_info, history, seconds,
                  controls=None, judge_info=None):
    """results.json, the same for a finished run and for --evaluate."""
    flags = cfg["flags"]
    return {"protocol": flags["protocol"], "private_digits": list(private_digits(cfg)), "target": target_info,
            "attack": {"variant": flags["variant"], "queries": queries, "query_budget": flags["query_budget"],
                       **metrics, "surrogate": surrogate},
            "controls": controls or {}, "reference": reference, "evaluator": evaluator_info, "judge": judge_info,
            "history": history,
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def evaluator_path(flags, seed=None):
    """Shared cache under the data folder, keyed by seed; a dry run's throwaway evaluator stays in its run."""
    seed = flags["evaluator_seed"] if seed is None else seed
    if flags["dry_run"]:
        own = seed == flags["evaluator_seed"]
        return Path(flags["model_dir"]) / ("evaluator.pt" if own else f"evaluator_seed{seed}.pt")
    return Path(flags["data_dir"]) / CACHE_DIR / f"evaluator_seed{seed}.pt"


def evaluator_stage(flags, data, device, private_classes, seed=None):
    """The evaluation classifier (trained once per seed and data): (evaluator, its info, reference rows)."""
    seed = flags["evaluator_seed"] if seed is None else seed
    path = evaluator_path(flags, seed)
    evaluator, ckpt = load_evaluator(path, data["train"], data["test"], seed, device, dry_run=flags["dry_run"])
    info = {"seed": seed, "test_accuracy": ckpt["test_accuracy"], "path": str(path)}
    if len(private_classes) == len(evaluator.stats):
        return evaluator, info, ckpt["reference"]
    return evaluator, info, reference_rows(evaluator, data["test"], classes=private_classes)


def results_suffix(flags, evaluator_seed=None, judge_seed=None):
    """'' for the run's own evaluator and judge; else _evaluator<E> and/or _judge<J>, the files of another judge."""
    parts = ((f"_evaluator{evaluator_seed}", evaluator_seed, flags["evaluator_seed"]),
             (f"_judge{judge_seed}", judge_seed, flags["judge_seed"]))
    return "".join(name for name, seed, own in parts if seed not in (None, own))


def write_results(paths, results, grid_images, suffix=""):
    """results{suffix}.json and report{suffix}.png, and the headline on stdout."""
    metrics, name = results["attack"], f"results{suffix}.json"
    write_json_atomic(results, paths["run"] / name)
    write_report(results["history"], metrics, grid_images, results["reference"], paths["run"] / f"report{suffix}.png",
                 results["private_digits"])
    print(f"attack accuracy: {metrics['accuracy_by_evaluator']:.3f} by the evaluator, "
          f"{metrics['accuracy_by_target']:.3f} by the target; FID_eval {metrics['fid_evaluator']:.2f}, "
          f"KNN {metrics['knn_dist']:.2f}; results in {paths['run'] / name}")
    if "judge" in metrics:
        print(f"  held-out judge: accuracy {metrics['judge']['accuracy']:.3f}, coverage {metrics['judge']['coverage']:.3f}")
    for control, row in results.get("controls", {}).items():
        by_judge = f", {row['judge']['accuracy']:.3f} by the held-out judge" if "judge" in row else ""
        print(f"  control {control}: {row['accuracy_by_evaluator']:.3f} by the evaluator{by_judge}")


SUMMARY_KEYS = (("target", "test_accuracy"), ("attack", "accuracy_by_evaluator"), ("attack", "accuracy_by_target"),
                ("attack", "fid_evaluator"), ("attack", "knn_dist"))


def summarise(all_results, path):
    """Mean ± std over seeds of the headline metrics (and of each control's accuracy, by the evaluator and the
    held-out judge), the judge's passes per digit pooled over seeds with Wilson intervals; printed and written to path."""
    summary = {}
    first = next(iter(all_results.values()))
    seeds = list(all_results)
    for section, key in SUMMARY_KEYS:
        summary[f"{section}.{key}"] = _mean_std(f"{section}.{key}", [r[section][key] for r in all_results.values()],
                                                seeds)
    judged_all = all("judge" in r["attack"] for r in all_results.values())
    if judged_all:
        summary["judge.attack"] = _mean_std("attack by the held-out judge",
                                            [r["attack"]["judge"]["accuracy"] for r in all_results.values()], seeds)
    # a control added to some seeds only (--evaluate RUN --controls NAME) is summarised over the seeds that have it
    names = list(dict.fromkeys(c for r in all_results.values() for c in r.get("controls", {})))
    for name in names:
        have = {s: r["controls"][name] for s, r in all_results.items() if name in r.get("controls", {})}
        summary[f"controls.{name}"] = _mean_std(f"controls.{name}", [c["accuracy_by_evaluator"] for c in have.values()],
                                                list(have), len(seeds))
        judged = {s: c["judge"]["accuracy"] for s, c in have.items() if "judge" in c}
        if judged and judged_all:
            summary[f"judge.{name}"] = _mean_std(f"{name} by the held-out judge", list(judged.values()), list(judged),
                                                 len(seeds))
    pooled = None
    if judged_all:
        judged = [r["attack"]["judge"] for r in all_results.values()]
        pooled = {str(d): p for d, p in pooled_by_digit(judged, first["private_digits"]).items()}
        below, total = cells_below(judged)
        print(f"held-out judge: {below} of {total} (seed, digit) cells below 0.5; per digit, pooled over seeds: "
              + ", ".join(f"{d} {p['passed']}/{p['n']} [{p['wilson95'][0]:.2f}, {p['wilson95'][1]:.2f}]"
                          for d, p in pooled.items()))
        summary["judge.cells_below_0.5"] = {"cells": below, "of": total}
    write_json_atomic({"seeds": list(all_results), "summary": summary, "judge_pooled_by_digit": pooled}, path)
    return summary


def _mean_std(name, values, seeds, n_seeds=None):
    """{'mean', 'std' (sample), 'values', 'seeds'} of one metric over the seeds that have it (of n_seeds), printed."""
    values = torch.tensor(values, dtype=torch.float64)
    std = values.std().item() if len(values) > 1 else 0.0
    note = seeds_note(len(seeds), n_seeds or len(seeds))
    print(f"{name}: {values.mean().item():.4f} ± {std:.4f} over seeds {seeds}{note}")
    return {"mean": values.mean().item(), "std": std, "values": values.tolist(), "seeds": list(seeds)}
