"""The run folder: where a run's files go, what config.json must hold, and never overwriting a finished run."""
import datetime
import json
from pathlib import Path

import bf_mnist as bfm
from attacklab.protocols import PROTOCOLS
from attacklab.runtime import UserError, retired_error

REPO = Path(__file__).resolve().parents[1]
RESULTS = "results.json"
CONFIG = "config.json"

PATH_FLAGS = ("run_dir", "model_dir", "sample_dir", "log_dir")
# Flags every config.json written by main.py holds; a folder whose config lacks one was not written by it.
REQUIRED_FLAGS = ("data_dir", "run_dir", "model_dir", "sample_dir", "log_dir", "batch_size", "gan_batch_size",
                  "dim_initial_vec", "epochs_target_model", "epochs_gan", "ngpu", "devicen", "training_flag",
                  "train_model_dir", "variant", "aux_split", "seed", "n_eval_per_class", "checkpoint_every",
                  "evaluator_seed", "dry_run")


OLDER_RUNS = {"protocol": "same", "query_budget": None, "controls": [], "recipe": None, "attack": "inversion",
              "fgsm_eps": [], "fgsm_target": None, "extraction_digits": [3, 5], "extraction_budgets": [],
              "extraction_queries": [1], "extraction_decimals": [],
              "api_output": "label", "api_decimals": 1, "defence": "none", "smoothing": -0.05, "defence_strength": None,
              "judge": "heldout", "judge_seed": 0}
# flags tried and not adopted: the value that switched each off, and the commit that reruns it (docs/dead_ends.md)
RETIRED_FLAGS = {"aux_letters": (0, "9886998")}


# flags read only by one attack: another attack's run does not differ by them
ATTACK_FLAGS = {"fgsm": ("fgsm_eps", "fgsm_target"),
                "extraction": ("extraction_digits", "extraction_budgets", "extraction_queries", "extraction_decimals")}


def unread_flags(attack):
    """The flags that --attack `attack` does not read."""
    return {k for other, keys in ATTACK_FLAGS.items() if other != attack for k in keys}


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
    for key, value in OLDER_RUNS.items():  # flags added since: what a run written before them did
        flags.setdefault(key, value)
    for key, (off, commit) in RETIRED_FLAGS.items():  # flags that have left the code: readable only where off
        if flags.pop(key, off) != off:
            raise UserError(retired_error(f"{path} was run with --{key}, which", commit))
    flags.setdefault("private_digits", list(PROTOCOLS[flags["protocol"]].private_classes))
    relocate(flags, run_dir)
    cfg["recipe"] = upgrade_recipe(cfg.get("recipe"), flags["variant"], flags["protocol"])
    return cfg


def relocate(flags, run_dir):
    """A run folder moved or copied since: its own parts (models, samples, logs) are read where it is now."""
    if not flags["run_dir"]:
        return flags
    old, new = Path(flags["run_dir"]).resolve(), Path(run_dir).resolve()
    for key in PATH_FLAGS:
        path = Path(flags[key]).resolve() if flags[key] else None
        if path is not None and (path == old or old in path.parents):
            flags[key] = str(new / path.relative_to(old))
    return flags


def upgrade_recipe(recipe, variant, protocol="same"):
    """A recipe read from an older run's config.json, in today's keys (blog runs stored none)."""
    if recipe is None:
        return bfm.default_recipe(variant, protocol)
    recipe = dict(recipe)
    # entries added since: off in the runs written before them
    for key, off in (("surrogate_noise", 0.0), ("surrogate_models", 1), ("surrogate_affine", [0, 0.0]),
                     ("surrogate_cutout", 0)):
        recipe.setdefault(key, off)
    for key, off in bfm.RETIRED_ENTRIES.items():  # entries that have left the code: readable only where they were off
        if key in recipe and recipe.pop(key) != off and off is not None:
            raise UserError(f"this run used {key}: {bfm.retired_entry_error(key)}")
    if "betas" in recipe:  # written before the table had a column per variant: one pair for G and D
        recipe["betas_g"] = recipe["betas_d"] = recipe.pop("betas")
    return {**bfm.default_recipe(variant, protocol), **recipe}
