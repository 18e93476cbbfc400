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
import sys
import time
from pathlib import Path

import torch

import bf_mnist as bfm
from attacklab import attack, evaluation, provider
from attacklab.api import API_OUTPUTS, PredictionAPI
from attacklab.controls import CONTROLS, DEFAULT_CONTROLS, run_controls, validate_controls
from attacklab.defences import DEFENCES, STRENGTH_HELP, strength_error
from attacklab.flagtypes import OneLineParser, non_negative_float, positive_int, recipe_with, str2bool
from attacklab.classifiers import classifier_accuracy
from attacklab.data import load_data
from attacklab.extraction import add_extraction_arguments, run_extraction
from attacklab.fgsm import DEFAULT_EPS, run_fgsm
from attacklab.protocols import DEFAULT_BUDGET, DEFAULT_EPOCHS_GAN, PROTOCOLS, private_digits_error, protocol_for
from attacklab.report import Logger
from attacklab.runfolder import (CONFIG, PATH_FLAGS, RESULTS, load_run_config, make_run_dirs, refuse_existing_run,
                                 resolve_paths, unread_flags)
from attacklab.runtime import UserError, select_device, write_json_atomic

REPO = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------

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
    p.add_argument("--epochs_gan", type=positive_int, default=None,
                   help=f"GAN epochs over the auxiliary images (default: the protocol's, {DEFAULT_EPOCHS_GAN})")
    p.add_argument("--ngpu", type=int, default=1, help="GPUs to use; 0 runs on the CPU")
    p.add_argument("--devicen", type=int, default=0, help="index of the (first) CUDA device")
    p.add_argument("--training_flag", type=str2bool, default=True,
                   help="train the target model (true) or load --train_model_dir (false)")
    p.add_argument("--train_model_dir", default=None,
                   help="target checkpoint to load when --training_flag false (a target_best.pt, or a run "
                        "folder / models folder holding one)")
    p.add_argument("--variant", choices=bfm.VARIANTS, default="corrected",
                   help="the working attack, or the article's algorithm with its defects")
    p.add_argument("--attack", choices=("inversion", "fgsm", "extraction"), default="inversion",
                   help="the article's model inversion, or its other two attacks on the same provider")
    p.add_argument("--fgsm_eps", type=non_negative_float, nargs="+", default=list(DEFAULT_EPS), metavar="EPS",
                   help="--attack fgsm: the L-inf step sizes of the sweep")
    p.add_argument("--fgsm_target", type=int, default=None, choices=range(10), metavar="CLASS",
                   help="--attack fgsm: also measure targeted FGSM towards this class")
    add_extraction_arguments(p)
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="same",
                   help="who holds which images: 'same' (the article: the attacker holds the --aux_split digits), "
                        "'disjoint' (private digits 0-4, or --private_digits; the attacker holds every image of the others)")
    p.add_argument("--private_digits", type=int, nargs="+", default=None, metavar="D",
                   help="--protocol disjoint: the provider's digits (default 0 1 2 3 4); the target's k outputs are "
                        "these digits in increasing order, and the attacker holds every image of every other digit")
    p.add_argument("--aux_split", choices=("test", "val"), default="test",
                   help="protocol same: the attacker's auxiliary images (unlabelled; the target labels them)")
    p.add_argument("--api_output", choices=API_OUTPUTS, default="label",
                   help="what the API returns: the label (the article), the softmax vector, or it rounded")
    p.add_argument("--api_decimals", type=positive_int, default=1, help="--api_output rounded: decimals kept")
    p.add_argument("--defence", choices=tuple(DEFENCES), default="none",
                   help="the provider's defence while training the target (docs/defences.md)")
    p.add_argument("--defence_strength", type=float, default=None, metavar="S", help=STRENGTH_HELP)
    p.add_argument("--query_budget", type=positive_int, default=None,
                   help="most images the attacker may send to the API (default: the protocol's, "
                        f"{ {k: v for k, v in DEFAULT_BUDGET.items()} }; results.json reports it)")
    p.add_argument("--controls", nargs="+", default=None, metavar="NAME",
                   help=f"controls run beside the attack, from {', '.join(CONTROLS)}, or none; with --evaluate: "
                        "controls to add to the finished run "
                        f"(default: the protocol's, { {k: list(v) for k, v in DEFAULT_CONTROLS.items()} })")
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
    p.add_argument("--evaluator_seed", type=int, default=None,
                   help="seed of the evaluation classifier (default 0; cached per seed under the data folder); "
                        "with --evaluate: judge the run with this evaluator too "
                        "(results_evaluator<S>.json, report_evaluator<S>.png)")
    p.add_argument("--judge", choices=("heldout", "none"), default="heldout",
                   help="also judge with a network that never saw the provider's training images (docs/heldout.md)")
    p.add_argument("--judge_seed", type=int, default=None,
                   help="seed of the held-out judge (default 0, cached per seed); with --evaluate: judge the run with "
                        "this judge too (results_judge<S>.json, report_judge<S>.png)")
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
    for error in (private_digits_error(args.protocol, args.private_digits), strength_error(args.defence, args.defence_strength)):
        if error:
            raise UserError(error)
    recipe_for(args)  # a bad --recipe entry fails before any folder is made
    validate_controls(run_flags(args)["controls"], args.protocol, args.variant)
    if args.attack != "inversion" and args.protocol != "same":
        raise UserError(f"--attack {args.attack} attacks the ten-digit target: drop --protocol {args.protocol}")
    if not args.training_flag and not args.train_model_dir:
        raise UserError("--training_flag false needs --train_model_dir PATH (a target_best.pt "
                        "written by an earlier run)")


# ---------------------------------------------------------------------------
# run folder and config.json
# ---------------------------------------------------------------------------

def run_flags(args):
    """The flags as config.json records them (defaults resolved), before the run's own folders are filled in."""
    flags = {k: v for k, v in vars(args).items() if k not in ("resume", "evaluate", "seeds")}
    flags["gan_batch_size"] = gan_batch_size(args)
    flags["data_dir"] = str(Path(args.data_dir).resolve())
    flags["evaluator_seed"] = 0 if args.evaluator_seed is None else args.evaluator_seed
    flags["judge_seed"] = 0 if args.judge_seed is None else args.judge_seed
    flags["epochs_gan"] = args.epochs_gan or DEFAULT_EPOCHS_GAN[args.protocol]
    flags["private_digits"] = sorted(args.private_digits or PROTOCOLS[args.protocol].private_classes)
    if args.query_budget is None:
        flags["query_budget"] = DEFAULT_BUDGET[args.protocol]
    controls = DEFAULT_CONTROLS[args.protocol] if args.controls is None else args.controls
    flags["controls"] = [c for c in controls if c != "none"]
    return flags


def recipe_for(args):
    """The variant's recipe with the flags that override it (--recipe, then --surrogate_weight)."""
    recipe = recipe_with(bfm.default_recipe(args.variant, args.protocol), getattr(args, "recipe", None) or (),
                         bfm.RETIRED_ENTRIES, bfm.retired_entry_error)
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


def attack_and_judge(cfg, data, target, paths, device, logger, seconds):
    """The attack through the API, then the experimenter's evaluation and controls: (results, grid images)."""
    flags, protocol = cfg["flags"], protocol_for(cfg["flags"])
    t0 = time.time()
    evaluator, evaluator_info, reference = evaluation.evaluator_stage(flags, data, device, protocol.private_classes)
    judge, judge_info = evaluation.judge_stage(flags, data, device, protocol.private_classes)
    seconds["evaluator"] = time.time() - t0
    aux = protocol.aux(data, flags)  # (images, true labels): only the images go to the attacker
    api = PredictionAPI(target, flags["query_budget"], flags["api_output"], flags["api_decimals"])
    monitor = evaluation.Monitor(cfg, target, evaluator, device, paths["run"], logger)
    outcome = attack.complete(attack.run_inversion(attack.attacker_config(cfg), api, aux[0], attack.attacker_paths(paths),
                                                   device, logger, max_batches(flags)), monitor)
    seconds.update(outcome.seconds)
    t0 = time.time()
    metrics, grid_images = evaluation.final_evaluation(cfg, outcome.g, target, evaluator, paths, device, aux[0], judge)
    seconds["evaluation"] = time.time() - t0
    t0 = time.time()
    controls = run_controls(cfg, target, evaluator, aux, paths, device, max_batches(flags), judge=judge, seconds=seconds)
    seconds["controls"] = time.time() - t0
    surrogate = evaluation.surrogate_report(outcome.surrogate, outcome.surrogate_info, target,
                                            protocol.private(data)["val"][0])
    return evaluation.build_results(None, cfg, api.queries, metrics, surrogate, reference, evaluator_info,
                                    evaluation.with_monitor(outcome.history, monitor.records), seconds, controls,
                                    judge_info), grid_images


def run(args):
    """Train the target, attack it through its API, evaluate; everything lands in the run folder."""
    cfg, paths, device = start_run(args)
    flags, seconds, t0 = cfg["flags"], {}, time.time()
    data = load_data(Path(flags["data_dir"]))
    private = protocol_for(flags).private(data)
    seconds["data"] = time.time() - t0
    loaded = None
    if not flags["training_flag"]:
        t0 = time.time()
        loaded = (provider.load_target_stage(flags, paths, device), time.time() - t0)
    # The inputs are good: only now does the folder become a run (and refuse to be overwritten).
    if not args.resume:
        write_json_atomic(cfg, paths["run"] / CONFIG)
    logger = Logger(paths["tensorboard"])
    try:
        target, target_info, seconds["target"] = provider.provider_stage(cfg, private, paths, device, logger, loaded,
                                                                            max_batches(flags))
        if flags["attack"] != "inversion":
            return other_attack(cfg, data, target, target_info, paths, device, logger, seconds)
        results, grid_images = attack_and_judge(cfg, data, target, paths, device, logger, seconds)
        results["target"] = target_info
        evaluation.write_results(paths, results, grid_images)
    finally:
        logger.close()
    return results


def other_attack(cfg, data, target, target_info, paths, device, logger, seconds):
    """--attack fgsm or extraction on the provider's target: results.json with that attack's section."""
    flags, t0 = cfg["flags"], time.time()
    if flags["attack"] == "fgsm":
        evaluator, info, _ = evaluation.evaluator_stage(flags, data, device, PROTOCOLS["same"].private_classes)
        out = run_fgsm(cfg, data, target, evaluator, paths, device, logger, max_batches(flags))
    else:
        out, info = run_extraction(cfg, data, target, paths, device, logger, max_batches(flags)), None
    seconds[flags["attack"]] = time.time() - t0
    results = {"attack": flags["attack"], "target": target_info, flags["attack"]: out, "evaluator": info,
               "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    write_json_atomic(results, paths["run"] / RESULTS)
    print(f"results in {paths['run'] / RESULTS}")
    return results


def evaluate_run(run_dir, evaluator_seed=None, add_controls=None, judge_seed=None):
    """--evaluate: a finished run judged again (by another evaluator or judge if asked), plus add_controls."""
    cfg = load_run_config(run_dir, "--evaluate")
    flags, protocol = cfg["flags"], protocol_for(cfg["flags"])
    old = json.loads((Path(run_dir) / RESULTS).read_text()) if (Path(run_dir) / RESULTS).is_file() else {}
    # the controls it ran, those an earlier --evaluate added, and those asked for now
    for name in [*old.get("controls", {}), *(add_controls or ())]:
        if name != "none" and name not in flags["controls"]:
            flags["controls"].append(name)
    validate_controls(flags["controls"], flags["protocol"], flags["variant"])
    if flags["attack"] != "inversion":
        raise UserError(f"--evaluate recomputes inversion runs; {run_dir} ran --attack {flags['attack']}, "
                        "whose results.json is complete: rerun it to measure again")
    paths = {"run": Path(run_dir).resolve(), "models": Path(flags["model_dir"]), "samples": Path(flags["sample_dir"])}
    device = select_device(flags["ngpu"], flags["devicen"])
    data = load_data(Path(flags["data_dir"]))
    private, aux = protocol.private(data), protocol.aux(data, flags)
    target, target_ckpt = provider.load_target(paths["models"] / "target_best.pt", device, "--evaluate",
                                               protocol.n_classes, flags["defence"])
    g, ckpt = attack.load_generator(cfg, paths["models"] / "gan_last.pt", device)
    surrogate, info = attack.load_surrogate(paths["models"] / "surrogate.pt", device, protocol.n_classes,
                                            cfg["recipe"]["surrogate_models"])
    evaluator, evaluator_info, reference = evaluation.evaluator_stage(flags, data, device, protocol.private_classes,
                                                                      evaluator_seed)
    judge_flags = flags if judge_seed is None else dict(flags, judge="heldout", judge_seed=judge_seed)
    judge, judge_info = evaluation.judge_stage(judge_flags, data, device, protocol.private_classes)
    metrics, grid_images = evaluation.final_evaluation(cfg, g, target, evaluator, paths, device, aux[0], judge)
    suffix = evaluation.results_suffix(flags, evaluator_seed, judge_seed)  # another judge's: beside the run's own
    # every control judged again (a generative one resumes its finished G), saved only by the run's own judges
    controls = run_controls(cfg, target, evaluator, aux, paths, device, reuse=False, save=not suffix, judge=judge)
    target_info = old.get("target") or {"val_accuracy": target_ckpt["val_accuracy"],
                                        "test_accuracy": classifier_accuracy(target, *private["test"]),
                                        "defence": provider.saved_defence_report(flags, paths["models"])}
    results = evaluation.build_results(target_info, cfg, ckpt["queries"], metrics,
                                       evaluation.surrogate_report(surrogate, info, target, private["val"][0]),
                                       reference, evaluator_info,
                                       evaluation.with_monitor(ckpt["history"], evaluation.read_monitor(paths["run"])),
                                       old.get("seconds", {}), controls, judge_info)
    evaluation.write_results(paths, results, grid_images, suffix)
    return results


# ---------------------------------------------------------------------------
# several seeds
# ---------------------------------------------------------------------------

def check_same_flags(saved_cfg, run_args, run_dir):
    """A sweep reuses a seed's earlier run only if it was made with the flags asked for now."""
    skip = set(PATH_FLAGS) | unread_flags(run_args.attack)
    wanted = {k: v for k, v in run_flags(run_args).items() if k not in skip}
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
            evaluate_run(args.evaluate, args.evaluator_seed, args.controls, args.judge_seed)
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
