"""Model inversion on MNIST: train the provider's classifier, then attack it with a conditional DCGAN.

    python main.py                      # the whole experiment on defaults
    python main.py --variant blog       # the article's algorithm, defects included
    python main.py --resume runs/X      # continue an interrupted run
    python main.py --evaluate runs/X    # recompute a finished run's metrics

This file holds the flags, the run folder and the order of the stages; the stages themselves are
in the attacklab package, the article's networks and the inversion's loops in bf_mnist.py.
"""
import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import torch

import bf_mnist as bfm
from attacklab import attack, evaluation, provider
from attacklab.api import PredictionAPI
from attacklab.classifiers import classifier_accuracy
from attacklab.data import load_data
from attacklab.report import Logger
from attacklab.runtime import UserError, select_device, write_json_atomic

REPO = Path(__file__).resolve().parent
RESULTS = "results.json"
CONFIG = "config.json"


# ---------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def str2bool(text):
    """true/false/1/0/yes/no -> bool (argparse's type=bool takes 'False' as True)."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "y", "t"):
        return True
    if value in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0/yes/no, got {text!r}")


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text):
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser():
    """All flags of main.py; the article's names are kept."""
    p = OneLineParser(description="Model inversion of an MNIST classifier with a conditional DCGAN.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=str(REPO / "Data" / "MNIST"),
                   help="ImageFolder tree with train/ val/ test/; prepared from MNIST when missing or empty")
    p.add_argument("--run_dir", default=None,
                   help="folder of this run's outputs (default: runs/<YYYYmmdd-HHMMSS> in the repository)")
    p.add_argument("--model_dir", default=None, help="checkpoints (default: RUN_DIR/models)")
    p.add_argument("--sample_dir", default=None, help="sample grids (default: RUN_DIR/samples)")
    p.add_argument("--log_dir", default=None, help="TensorBoard event files (default: RUN_DIR/tensorboard)")
    p.add_argument("--batch_size", type=positive_int, default=200,
                   help="batch size of the target model, and of the GAN in the blog variant")
    p.add_argument("--gan_batch_size", type=positive_int, default=None,
                   help="GAN batch size (default: --batch_size for blog, the recipe's 64 for corrected)")
    p.add_argument("--dim_initial_vec", type=positive_int, default=100, help="size of the noise z")
    p.add_argument("--epochs_target_model", type=positive_int, default=2, help="target model epochs")
    p.add_argument("--epochs_gan", type=positive_int, default=7, help="GAN epochs over the auxiliary images")
    p.add_argument("--ngpu", type=int, default=1, help="GPUs to use; 0 runs on the CPU")
    p.add_argument("--devicen", type=int, default=0, help="index of the (first) CUDA device")
    p.add_argument("--training_flag", type=str2bool, default=True,
                   help="train the target model (true) or load --train_model_dir (false)")
    p.add_argument("--train_model_dir", default=None,
                   help="target checkpoint to load when --training_flag false (a target_best.pt, or a run "
                        "folder / models folder holding one)")
    p.add_argument("--variant", choices=bfm.VARIANTS, default="corrected",
                   help="the working attack, or the article's algorithm with its defects")
    p.add_argument("--aux_split", choices=("test", "val"), default="test",
                   help="the attacker's auxiliary images (unlabelled; the target labels them)")
    p.add_argument("--surrogate_weight", type=non_negative_float, default=None,
                   help="corrected variant: weight of the surrogate classifier's loss for G "
                        f"(default: the recipe's {bfm.default_recipe()['surrogate_weight']}; 0 trains no surrogate)")
    p.add_argument("--recipe", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override entries of the variant's recipe (bf_mnist._RECIPE_ROWS), values as JSON, "
                        "e.g. --recipe adv_weight=0.3 lr_decay=null (docs/recipe_search.md)")
    p.add_argument("--seed", type=int, default=1, help="seed of everything in the run")
    p.add_argument("--n_eval_per_class", type=positive_int, default=100,
                   help="generated samples per class for the attack metrics")
    p.add_argument("--checkpoint_every", type=positive_int, default=1,
                   help="write models/gan_last.pt every N GAN epochs (and at the end)")
    p.add_argument("--evaluator_seed", type=int, default=0,
                   help="seed of the evaluation classifier (cached per seed under the data folder)")
    p.add_argument("--dry_run", action="store_true", help="one batch per epoch per stage (smoke tests)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint, with its own config")
    p.add_argument("--evaluate", default=None, metavar="RUN_DIR",
                   help="recompute the metrics, results.json and report.png of a run from its checkpoints")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="run once per seed into RUN_DIR/seed_<S> and print mean ± std of the metrics "
                        "(a seed already finished there is read, an interrupted one resumed)")
    return p


def validate_args(args):
    """Checks argparse cannot express; each failure is one UserError sentence."""
    if args.ngpu < 0:
        raise UserError(f"--ngpu must be 0 or more, got {args.ngpu}")
    recipe_for(args)  # a bad --recipe entry fails before any folder is made
    if not args.training_flag and not args.train_model_dir:
        raise UserError("--training_flag false needs --train_model_dir PATH (a target_best.pt "
                        "written by an earlier run)")


# ---------------------------------------------------------------------------
# run folder and config.json
# ---------------------------------------------------------------------------

PATH_FLAGS = ("run_dir", "model_dir", "sample_dir", "log_dir")
# Flags every config.json written by main.py holds; a folder whose config lacks one was not written by it.
REQUIRED_FLAGS = ("data_dir", "run_dir", "model_dir", "sample_dir", "log_dir", "batch_size", "gan_batch_size",
                  "dim_initial_vec", "epochs_target_model", "epochs_gan", "ngpu", "devicen", "training_flag",
                  "train_model_dir", "variant", "aux_split", "seed", "n_eval_per_class", "checkpoint_every",
                  "evaluator_seed", "dry_run")


def resolve_paths(args):
    """Run folder and its parts as absolute paths."""
    run_dir = Path(args.run_dir) if args.run_dir else REPO / "runs" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    return {"run": run_dir,
            "models": Path(args.model_dir).resolve() if args.model_dir else run_dir / "models",
            "samples": Path(args.sample_dir).resolve() if args.sample_dir else run_dir / "samples",
            "tensorboard": Path(args.log_dir).resolve() if args.log_dir else run_dir / "tensorboard"}


def make_run_dirs(paths):
    """Create the run's folders, or say in one sentence why they cannot be."""
    for path in paths.values():
        if path.exists() and not path.is_dir():
            raise UserError(f"{path} is a file, not a folder; pass another --run_dir")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write to {path} ({exc.strerror}); pass a writable --run_dir") from None


def refuse_existing_run(run_dir):
    """A folder that already holds a run is never overwritten."""
    for name in (RESULTS, CONFIG):
        if (run_dir / name).exists():
            raise UserError(f"{run_dir} already holds a run ({name}); continue it with --resume {run_dir} "
                            "or choose a new --run_dir")


def load_run_config(run_dir, flag):
    """The config.json of an earlier run, checked: every key this main.py reads is there."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{flag} {run_dir}: no {CONFIG} there; pass a run folder written by main.py")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is not readable JSON; pass a run folder written by main.py") from None
    flags = cfg.get("flags") if isinstance(cfg, dict) else None
    missing = [k for k in ("flags", "seed") if k not in cfg] if isinstance(cfg, dict) else ["flags"]
    missing += [f"flags.{k}" for k in REQUIRED_FLAGS if isinstance(flags, dict) and k not in flags]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}: it was edited "
                        "or written by another version of main.py; pass a run folder written by this one")
    cfg["recipe"] = bfm.upgrade_recipe(cfg.get("recipe"), flags["variant"])
    return cfg


def run_flags(args):
    """The flags as config.json records them, before the run's own folders are filled in."""
    flags = {k: v for k, v in vars(args).items() if k not in ("resume", "evaluate", "seeds")}
    flags["gan_batch_size"] = gan_batch_size(args)
    flags["data_dir"] = str(Path(args.data_dir).resolve())
    return flags


def recipe_for(args):
    """The variant's recipe with the flags that override it (--recipe, then --surrogate_weight)."""
    recipe = bfm.default_recipe(args.variant)
    for item in getattr(args, "recipe", None) or ():
        key, _, text = item.partition("=")
        if key not in recipe:
            raise UserError(f"--recipe {item}: no recipe entry {key!r}; choose from {', '.join(sorted(recipe))}")
        try:
            recipe[key] = json.loads(text)
        except ValueError:
            raise UserError(f"--recipe {item}: {text!r} is not a JSON value (numbers, null, [lists], \"strings\")") from None
    if getattr(args, "surrogate_weight", None) is not None and args.variant == "corrected":
        recipe["surrogate_weight"] = args.surrogate_weight
    return recipe


def gan_batch_size(args):
    """The GAN's batch: --gan_batch_size, else the recipe's (the blog's is --batch_size, as the article)."""
    return args.gan_batch_size or recipe_for(args)["batch_size"] or args.batch_size


def run_config(args, paths, device):
    """Everything that defines the run, written to config.json and into checkpoints."""
    import torchvision
    flags = run_flags(args)
    flags["run_dir"] = str(paths["run"])
    for key, part in (("model_dir", "models"), ("sample_dir", "samples"), ("log_dir", "tensorboard")):
        flags[key] = str(paths[part])
    return {"flags": flags, "seed": args.seed, "device": str(device), "recipe": recipe_for(args),
            "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
                         "python": sys.version.split()[0]}}


def max_batches(flags):
    """--dry_run: one batch per epoch per stage."""
    return 1 if flags["dry_run"] else None


# ---------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------

def start_run(args):
    """Validate, make the folders and the config (a resumed run keeps its own): (cfg, paths, device)."""
    if args.resume:
        saved = load_run_config(args.resume, "--resume")
        if (Path(args.resume) / RESULTS).exists():
            raise UserError(f"{args.resume} is already finished ({RESULTS} is there); start a new run "
                            "with another --run_dir")
        args = argparse.Namespace(**dict(saved["flags"], resume=args.resume, evaluate=None, seeds=None))
    validate_args(args)
    paths = resolve_paths(args)
    if not args.resume:
        refuse_existing_run(paths["run"])
    make_run_dirs(paths)
    device = select_device(args.ngpu, args.devicen)
    print(f"device: {device}")
    cfg = run_config(args, paths, device)
    if args.resume:
        cfg["recipe"] = saved["recipe"]  # the run's own recipe, even if the defaults changed since
    return cfg, paths, device


def run(args):
    """Train the target, attack it through its API, evaluate; everything lands in the run folder."""
    cfg, paths, device = start_run(args)
    flags, seconds, t0 = cfg["flags"], {}, time.time()
    data = load_data(Path(flags["data_dir"]))
    seconds["data"] = time.time() - t0
    if not flags["training_flag"]:
        t0 = time.time()
        target, val_acc = provider.load_target_stage(flags, paths, device)
        seconds["target"] = time.time() - t0
    # The inputs are good: only now does the folder become a run (and refuse to be overwritten).
    if not args.resume:
        write_json_atomic(cfg, paths["run"] / CONFIG)
    logger = Logger(paths["tensorboard"])
    try:
        if flags["training_flag"]:
            target, val_acc, seconds["target"] = provider.train_target_stage(cfg, data, paths, device, logger,
                                                                             max_batches(flags))
        target_info = {"val_accuracy": val_acc,
                       "test_accuracy": classifier_accuracy(target, *data["test"],
                                                                       max_batches=max_batches(flags))}
        print(f"target model: val accuracy {val_acc:.4f}, test accuracy {target_info['test_accuracy']:.4f}")
        t0 = time.time()
        evaluator, evaluator_info, reference = evaluation.evaluator_stage(flags, data, device)
        seconds["evaluator"] = time.time() - t0
        api = PredictionAPI(target)
        outcome = attack.run_inversion(cfg, api, data[flags["aux_split"]][0], paths, device, logger,
                                       evaluation.make_monitor(cfg, target, evaluator, device), max_batches(flags))
        seconds.update(outcome.seconds)
        metrics, grid_images = evaluation.final_evaluation(cfg, outcome.g, target, evaluator, paths, device)
        surrogate = evaluation.surrogate_report(outcome.surrogate, outcome.surrogate_info, target, data["val"][0])
        results = evaluation.build_results(target_info, flags["variant"], api.queries, metrics, surrogate, reference,
                                           evaluator_info, outcome.history, seconds)
        evaluation.write_results(paths, results, grid_images)
    finally:
        logger.close()
    return results


def evaluate_run(run_dir):
    """--evaluate: recompute a run's metrics from its saved target, generator and surrogate."""
    cfg = load_run_config(run_dir, "--evaluate")
    flags = cfg["flags"]
    paths = {"run": Path(run_dir).resolve(), "models": Path(flags["model_dir"]), "samples": Path(flags["sample_dir"])}
    device = select_device(flags["ngpu"], flags["devicen"])
    data = load_data(Path(flags["data_dir"]))
    target, target_ckpt = provider.load_target(paths["models"] / "target_best.pt", device, "--evaluate")
    g, ckpt = attack.load_generator(cfg, paths["models"] / "gan_last.pt", device)
    surrogate, info = attack.load_surrogate(paths["models"] / "surrogate.pt", device)
    evaluator, evaluator_info, reference = evaluation.evaluator_stage(flags, data, device)
    metrics, grid_images = evaluation.final_evaluation(cfg, g, target, evaluator, paths, device)
    old = json.loads((paths["run"] / RESULTS).read_text()) if (paths["run"] / RESULTS).is_file() else {}
    target_info = old.get("target") or {"val_accuracy": target_ckpt["val_accuracy"],
                                        "test_accuracy": classifier_accuracy(target, *data["test"])}
    results = evaluation.build_results(target_info, flags["variant"], ckpt["queries"], metrics,
                                       evaluation.surrogate_report(surrogate, info, target, data["val"][0]),
                                       reference, evaluator_info, ckpt["history"], old.get("seconds", {}))
    evaluation.write_results(paths, results, grid_images)
    return results


# ---------------------------------------------------------------------------
# several seeds
# ---------------------------------------------------------------------------

def check_same_flags(saved_cfg, run_args, run_dir):
    """A sweep reuses a seed's earlier run only if it was made with the flags asked for now."""
    wanted = {k: v for k, v in run_flags(run_args).items() if k not in PATH_FLAGS}
    differ = [f"--{k} {saved_cfg['flags'].get(k)} there, {v} now" for k, v in wanted.items()
              if saved_cfg["flags"].get(k) != v]
    if differ:
        raise UserError(f"{run_dir} was run with other flags ({'; '.join(differ)}); "
                        "pass the same flags or another --run_dir")


def run_seeds(args):
    """--seeds: one run per seed in RUN_DIR/seed_<S>, then mean ± std of the headline metrics."""
    if args.resume:
        raise UserError("--seeds cannot be combined with --resume; resume each RUN_DIR/seed_<S> on its own")
    base = Path(args.run_dir) if args.run_dir else REPO / "runs" / (
        datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-seeds")
    all_results = {}
    for seed in args.seeds:
        seed_dir = base / f"seed_{seed}"
        run_args = argparse.Namespace(**dict(vars(args), seed=seed, run_dir=str(seed_dir), seeds=None))
        if (seed_dir / CONFIG).is_file():
            check_same_flags(load_run_config(seed_dir, "--seeds"), run_args, seed_dir)
        if (seed_dir / RESULTS).is_file():  # finished earlier: a sweep can be extended or rerun after a crash
            print(f"seed {seed}: reading the finished run in {seed_dir}")
            all_results[seed] = json.loads((seed_dir / RESULTS).read_text())
            continue
        run_args.resume = str(seed_dir) if (seed_dir / CONFIG).is_file() else None
        all_results[seed] = run(run_args)
    return evaluation.summarise(all_results, base / "seeds_summary.json")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.evaluate:
            evaluate_run(args.evaluate)
        elif args.seeds:
            run_seeds(args)
        else:
            run(args)
        return 0
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f" --resume {args.resume or args.run_dir}" if (args.resume or args.run_dir) else " --resume RUN_DIR"
        print(f"main.py: interrupted; the last checkpoint is intact, continue with python main.py{where}",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
