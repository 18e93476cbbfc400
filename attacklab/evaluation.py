"""The experimenter's stage: judges what the attack produced with the target and the independent evaluator.

It holds what the attacker never sees (the target's weights, the evaluator, the private splits)
and builds results.json, for a finished run and for --evaluate alike.
"""
from pathlib import Path

import torch

import bf_mnist as bfm
from attacklab import sampling
from attacklab.attack import n_classes, sample_noise
from attacklab.classifiers import predict_labels
from attacklab.data import CACHE_DIR, to_unit
from attacklab.evaluator import load_evaluator, reference_rows
from attacklab.metrics import accuracy_by_class
from attacklab.protocols import protocol_for
from attacklab.report import save_grid, write_report
from attacklab.runtime import write_json_atomic


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


def make_monitor(cfg, target, evaluator, device):
    """monitor(g): the attack accuracies of G's fixed-noise samples, for the per-epoch logs."""
    noise, requested = eval_requests(cfg, device)
    rescale = bfm.RESCALE_OUTPUT[cfg["flags"]["variant"]]
    return lambda g: attack_accuracies(sampling.generator_images(g, requested, noise, rescale), requested,
                                       target, evaluator, private_digits(cfg))


def judge_images(images, requested, target, evaluator, digits, aux_images=None):
    """Every metric of images in [0, 1] meant as the requested target labels (digits[requested]); knn_aux when
    the aux images are given."""
    metrics = attack_accuracies(images, requested, target, evaluator, digits)
    asked = torch.tensor(digits)[requested]
    metrics.update({key: v for key, v in evaluator.metrics(images, asked, digits).items() if key not in metrics})
    if aux_images is not None:
        metrics["knn_aux"] = evaluator.nearest(images, to_unit(aux_images))
    return metrics


def final_evaluation(cfg, g, target, evaluator, paths, device, aux_images=None):
    """Metrics on n_eval_per_class samples per class from fixed noise, and the final grid: (metrics, grid images)."""
    rescale = bfm.RESCALE_OUTPUT[cfg["flags"]["variant"]]
    noise, requested = eval_requests(cfg, device)
    images = sampling.generator_images(g, requested, noise, rescale)
    metrics = judge_images(images, requested, target, evaluator, private_digits(cfg), aux_images)
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
                  controls=None):
    """results.json, the same for a finished run and for --evaluate."""
    flags = cfg["flags"]
    return {"protocol": flags["protocol"], "private_digits": list(private_digits(cfg)), "target": target_info,
            "attack": {"variant": flags["variant"], "queries": queries, "query_budget": flags["query_budget"],
                       **metrics, "surrogate": surrogate},
            "controls": controls or {}, "reference": reference, "evaluator": evaluator_info, "history": history,
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


def write_results(paths, results, grid_images, suffix=""):
    """results{suffix}.json and report{suffix}.png, and the headline on stdout."""
    metrics, name = results["attack"], f"results{suffix}.json"
    write_json_atomic(results, paths["run"] / name)
    write_report(results["history"], metrics, grid_images, results["reference"], paths["run"] / f"report{suffix}.png",
                 results["private_digits"])
    print(f"attack accuracy: {metrics['accuracy_by_evaluator']:.3f} by the evaluator, "
          f"{metrics['accuracy_by_target']:.3f} by the target; FID_eval {metrics['fid_evaluator']:.2f}, "
          f"KNN {metrics['knn_dist']:.2f}; results in {paths['run'] / name}")
    for control, row in results.get("controls", {}).items():
        print(f"  control {control}: {row['accuracy_by_evaluator']:.3f} by the evaluator")


SUMMARY_KEYS = (("target", "test_accuracy"), ("attack", "accuracy_by_evaluator"), ("attack", "accuracy_by_target"),
                ("attack", "fid_evaluator"), ("attack", "knn_dist"))


def summarise(all_results, path):
    """Mean ± std over seeds of the headline metrics (and of each control's accuracy), printed and written to path."""
    summary = {}
    first = next(iter(all_results.values()))
    keys = list(SUMMARY_KEYS) + [("controls", c) for c in first.get("controls", {})]
    for section, key in keys:
        pick = (lambda r: r[section][key]["accuracy_by_evaluator"]) if section == "controls" else (
            lambda r: r[section][key])
        values = torch.tensor([pick(r) for r in all_results.values()], dtype=torch.float64)
        std = values.std().item() if len(values) > 1 else 0.0
        summary[f"{section}.{key}"] = {"mean": values.mean().item(), "std": std, "values": values.tolist()}
        print(f"{section}.{key}: {values.mean().item():.4f} ± {std:.4f} over seeds {list(all_results)}")
    write_json_atomic({"seeds": list(all_results), "summary": summary}, path)
    return summary
