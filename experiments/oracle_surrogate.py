"""The white-box ceiling of an inversion run: the same attack with the target itself in place of its surrogate.

    python experiments/oracle_surrogate.py runs/heldout/d56789/seed_41 --out runs/oracle/d56789/seed_41
    python -m attacklab.tables runs/heldout/d56789 runs/oracle/d56789

The attacker never holds the target; this experimenter's diagnostic hands it to G's loss where the
surrogate (fitted to the API's labels of the attacker's images) would be. Everything else is the source
run's: its target, seed, recipe, aux images and their labels, G's initialisation and random stream. So
the pair (source run, oracle run) differs only in the surrogate. A digit the oracle run also fails is
one no better surrogate (more queries, refits on G's samples) can bring back: the target's own answers
accept what G draws. The new folder is judged like any run (`main.py --evaluate`, no controls).
`--recipe KEY=VALUE ...` changes the source's recipe as well (a stronger prior with the oracle, say).
`--surrogate source` puts the source run's own surrogate back instead: on the machine that ran the
source, that reproduces its G exactly (the pairing holds; tests/test_heldout.py checks it).
"""
import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bf_mnist as bfm  # noqa: E402
import main  # noqa: E402
from attacklab import attack, provider  # noqa: E402
from attacklab.api import PredictionAPI, as_labels  # noqa: E402
from attacklab.data import load_data  # noqa: E402
from attacklab.flagtypes import recipe_with  # noqa: E402
from attacklab.protocols import protocol_for  # noqa: E402
from attacklab.report import Logger  # noqa: E402
from attacklab.runfolder import CONFIG, RESULTS, load_run_config, make_run_dirs  # noqa: E402
from attacklab.runtime import UserError, select_device, write_json_atomic  # noqa: E402


def oracle_config(source_cfg, out, data_dir, overrides=()):
    """The source run's config, moved to `out`, reading MNIST from data_dir, with no controls and the
    recipe's entries changed by overrides (--recipe KEY=VALUE)."""
    recipe = recipe_with(source_cfg["recipe"], overrides, bfm.RETIRED_ENTRIES, bfm.retired_entry_error)
    cfg = dict(source_cfg, recipe=recipe, flags=dict(source_cfg["flags"], controls=[], data_dir=str(data_dir)))
    for key, part in (("run_dir", ""), ("model_dir", "models"), ("sample_dir", "samples"), ("log_dir", "tensorboard")):
        cfg["flags"][key] = str(out / part) if part else str(out)
    cfg["oracle_surrogate_of"] = str(source_cfg["flags"]["run_dir"])  # read by nothing: where it came from
    return cfg


def run_oracle(source, out, data_dir, surrogate="target", overrides=()):
    """Train G against the source run's target (or its own surrogate) as the surrogate, then judge it: the results."""
    cfg = load_run_config(source, "the source run")
    flags = cfg["flags"]
    if flags["attack"] != "inversion" or cfg["recipe"].get("surrogate_weight", 0) <= 0:
        raise UserError(f"{source} is not an inversion run with a surrogate; give a run of the corrected attack")
    if (out / RESULTS).exists():
        raise UserError(f"{out} is already finished ({RESULTS} is there); choose another --out")
    cfg = oracle_config(cfg, out, data_dir, overrides)
    paths = {"run": out, "models": out / "models", "samples": out / "samples", "tensorboard": out / "tensorboard"}
    make_run_dirs(paths)
    shutil.copyfile(Path(source) / "models" / "target_best.pt", paths["models"] / "target_best.pt")
    write_json_atomic(cfg, out / CONFIG)
    device = select_device(flags["ngpu"], flags["devicen"])
    protocol = protocol_for(cfg["flags"])
    aux_images = protocol.aux(load_data(Path(data_dir)), cfg["flags"])[0]
    target, _ = provider.load_target(paths["models"] / "target_best.pt", device, "the source run", protocol.n_classes,
                                     flags["defence"])
    if surrogate == "target":
        oracle = target.eval().requires_grad_(False)  # logits of [0, 1] images, as the surrogate's
    else:
        oracle, _ = attack.load_surrogate(Path(source) / "models" / "surrogate.pt", device, protocol.n_classes,
                                          cfg["recipe"]["surrogate_models"])
    api = PredictionAPI(target, flags["query_budget"], flags["api_output"], flags["api_decimals"])
    attacker = attack.attacker_config(cfg)
    images, answers = attack.label_own_images(attacker, api, aux_images)
    logger = Logger(paths["tensorboard"])
    try:
        attack.complete(attack.train_gan_stage(attacker, (images, as_labels(answers)), api,
                                               attack.attacker_paths(paths), device, logger, surrogate=oracle,
                                               max_batches=main.max_batches(flags)))
    finally:
        logger.close()
    return main.evaluate_run(str(out))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="a finished run folder of the corrected attack (seed_N)")
    p.add_argument("--out", type=Path, required=True, help="the oracle run's folder (a seed_N folder to table it)")
    p.add_argument("--data_dir", type=Path, default=REPO / "Data" / "MNIST", help="where MNIST is")
    p.add_argument("--surrogate", choices=("target", "source"), default="target",
                   help="what G's loss asks in the surrogate's place: the target, or the source run's own surrogate")
    p.add_argument("--recipe", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change the source run's recipe too (main.py's --recipe): then the pair differs in more")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        run_oracle(args.source, args.out.resolve(), args.data_dir, args.surrogate, args.recipe)
    except UserError as e:
        sys.exit(f"error: {e}")
