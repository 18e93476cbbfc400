"""Model inversion on MNIST: train the provider's classifier, then attack it with a conditional DCGAN.

    python main.py                      # the whole experiment on defaults
    python main.py --variant blog       # the article's algorithm, defects included
    python main.py --resume runs/X      # continue an interrupted run
    python main.py --evaluate runs/X    # recompute a finished run's metrics
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
    p.add_argument("--variant", choices=("corrected", "blog"), default="corrected",
                   help="the working attack, or the article's algorithm with its defects")
    p.add_argument("--aux_split", choices=("test", "val"), default="test",
                   help="the attacker's auxiliary images (unlabelled; the target labels them)")
    p.add_argument("--surrogate_weight", type=non_negative_float, default=None,
                   help="corrected variant: weight of the surrogate classifier's loss for G "
                        f"(default: the recipe's {bfm.default_recipe()['surrogate_weight']}; 0 trains no surrogate)")
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
        raise bfm.UserError(f"--ngpu must be 0 or more, got {args.ngpu}")
    if not args.training_flag and not args.train_model_dir:
        raise bfm.UserError("--training_flag false needs --train_model_dir PATH (a target_best.pt "
                            "written by an earlier run)")


# ---------------------------------------------------------------------------
# run folder
# ---------------------------------------------------------------------------

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
    for key, path in paths.items():
        if path.exists() and not path.is_dir():
            raise bfm.UserError(f"{path} is a file, not a folder; pass another --run_dir")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise bfm.UserError(f"cannot write to {path} ({exc.strerror}); pass a writable --run_dir") from None


def refuse_existing_run(run_dir):
    """A folder that already holds a run is never overwritten."""
    for name in (RESULTS, CONFIG):
        if (run_dir / name).exists():
            raise bfm.UserError(f"{run_dir} already holds a run ({name}); continue it with --resume {run_dir} "
                                "or choose a new --run_dir")


def load_run_config(run_dir, flag):
    """The config.json of an earlier run, as a dict."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise bfm.UserError(f"{flag} {run_dir}: no {CONFIG} there; pass a run folder written by main.py")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise bfm.UserError(f"{path} is not readable JSON; pass a run folder written by main.py") from None


PATH_FLAGS = ("run_dir", "model_dir", "sample_dir", "log_dir")


def run_flags(args):
    """The flags as config.json records them, before the run's own folders are filled in."""
    flags = {k: v for k, v in vars(args).items() if k not in ("resume", "evaluate", "seeds")}
    flags["gan_batch_size"] = gan_batch_size(args)
    flags["data_dir"] = str(Path(args.data_dir).resolve())
    return flags


def run_config(args, paths, device):
    """Everything that defines the run, written to config.json and into checkpoints."""
    flags = run_flags(args)
    flags["run_dir"] = str(paths["run"])
    for key in ("model_dir", "sample_dir", "log_dir"):
        flags[key] = str(paths[{"model_dir": "models", "sample_dir": "samples", "log_dir": "tensorboard"}[key]])
    return {"flags": flags, "seed": args.seed, "device": str(device),
            "recipe": corrected_recipe(args) if args.variant == "corrected" else None,
            "versions": {"torch": str(torch.__version__), "torchvision": str(_torchvision_version()),
                         "python": sys.version.split()[0]}}


def corrected_recipe(args):
    """The corrected variant's recipe with the flags that override it."""
    recipe = bfm.default_recipe()
    if getattr(args, "surrogate_weight", None) is not None:
        recipe["surrogate_weight"] = args.surrogate_weight
    return recipe


def _torchvision_version():
    import torchvision
    return torchvision.__version__


def max_batches(flags):
    """--dry_run: one batch per epoch per stage."""
    return 1 if flags["dry_run"] else None


def gan_batch_size(args):
    """The GAN's batch: --gan_batch_size, else the blog's --batch_size or the corrected recipe's."""
    if args.gan_batch_size:
        return args.gan_batch_size
    return args.batch_size if args.variant == "blog" else bfm.default_recipe()["batch_size"]


class Logger:
    """TensorBoard writes held back until the checkpoint they belong to is on disk.

    A resumed run then re-logs exactly the epochs it recomputes: no duplicated or missing points.
    """

    def __init__(self, log_dir):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(str(log_dir))
        self.pending = []

    def scalar(self, tag, value, step):
        self.pending.append(("scalar", tag, value, step))

    def image(self, tag, image, step):
        self.pending.append(("image", tag, image, step))

    def commit(self):
        for kind, tag, value, step in self.pending:
            if kind == "scalar":
                self.writer.add_scalar(tag, value, step)
            else:
                self.writer.add_image(tag, value, step)
        self.pending.clear()
        self.writer.flush()

    def close(self):
        self.writer.close()


# ---------------------------------------------------------------------------
# stage 1: the provider's target model
# ---------------------------------------------------------------------------

def train_target_stage(cfg, data, paths, device, logger):
    """Train f (resumable per epoch); keep and return the best-by-val weights."""
    flags = cfg["flags"]
    last_path, best_path = paths["models"] / "target_last.pt", paths["models"] / "target_best.pt"
    bfm.set_seed(cfg["seed"])
    model = bfm.TargetModel().to(device)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)  # the article's Adam, one fused kernel
    start, best_val, seconds = 0, -1.0, 0.0
    if last_path.is_file():
        state = bfm.load_checkpoint(last_path, "target_state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best_val, seconds = state["epoch"], state["best_val"], state["seconds"]
        bfm.set_rng_state(state["rng"])
        print(f"resuming the target model after epoch {start}")
    train_model = bfm.maybe_data_parallel(model, device, flags["ngpu"])
    (x_train, y_train), (x_val, y_val) = data["train"], data["val"]
    for epoch in range(start + 1, flags["epochs_target_model"] + 1):
        t0 = time.time()
        loss, acc = bfm.train_classifier_epoch(train_model, optimizer, x_train, y_train, flags["batch_size"],
                                               device, max_batches(flags), desc=f"target {epoch}")
        check_finite(loss, f"target model loss at epoch {epoch}", last_path)
        val = bfm.classifier_accuracy(model, x_val, y_val, max_batches=max_batches(flags))
        seconds += time.time() - t0
        if val > best_val:
            best_val = val
            bfm.save_atomic({"kind": "target", "model": model.state_dict(), "epoch": epoch,
                             "val_accuracy": val, "config": cfg}, best_path)
        bfm.save_atomic({"kind": "target_state", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "epoch": epoch, "best_val": best_val, "seconds": seconds, "rng": bfm.rng_state()},
                        last_path)
        for tag, value in (("train_loss", loss), ("train_accuracy", acc), ("val_accuracy", val)):
            logger.scalar(f"target/{tag}", value, epoch)
        logger.commit()
        print(f"target epoch {epoch}/{flags['epochs_target_model']}: loss {loss:.4f} "
              f"train acc {acc:.4f} val acc {val:.4f} (best {best_val:.4f})")
    best = bfm.load_checkpoint(best_path, "target")
    model.load_state_dict(best["model"])
    return model.eval(), best["val_accuracy"], seconds


def find_target_checkpoint(path):
    """--train_model_dir may name the file, a models/ folder or a run folder."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "target_best.pt", path / "models" / "target_best.pt"):
            if candidate.is_file():
                return candidate
        raise bfm.UserError(f"--train_model_dir {path} holds no target_best.pt; pass the file written by main.py")
    return path


def load_target_stage(flags, paths, device):
    """Load the provider's model from --train_model_dir instead of training it."""
    source = find_target_checkpoint(flags["train_model_dir"])
    ckpt = bfm.load_checkpoint(source, "target", what="--train_model_dir")
    model = bfm.TargetModel()
    bfm.load_state_strict(model, ckpt["model"], source, "--train_model_dir")
    dest = paths["models"] / "target_best.pt"
    if source.resolve() != dest.resolve():
        bfm.copy_atomic(source, dest)  # the run folder stays self-contained
    print(f"loaded the target model from {source} (val accuracy {ckpt['val_accuracy']:.4f})")
    return model.to(device).eval(), ckpt["val_accuracy"]


def check_finite(value, what, checkpoint):
    """Stop with one sentence when a loss is NaN or infinite; the last checkpoint stays as it was."""
    if not math.isfinite(value):
        raise bfm.UserError(f"{what} is {value}: training diverged; the last good checkpoint {checkpoint} "
                            "is kept (lower the learning rate or change --seed, then run again)")


# ---------------------------------------------------------------------------
# stage 2: the attacker's conditional GAN
# ---------------------------------------------------------------------------

def gan_checkpoint(g, d, opt_g, opt_d, epoch, cfg, history, queries, seconds):
    return {"kind": "gan", "g": bfm.unwrap(g).state_dict(), "d": bfm.unwrap(d).state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "epoch": epoch, "config": cfg,
            "history": history, "queries": queries, "seconds": seconds, "rng": bfm.rng_state()}


def attack_accuracies(g, target, judge, noise, requested, variant):
    """Accuracy of the requested class as judged by the target and by the evaluator; also the images."""
    images = bfm.generator_images(g, requested, noise, variant)
    acc_t, per_t = bfm.accuracy_by_class(bfm.predict_labels(target, images), requested)
    acc_e, per_e = bfm.accuracy_by_class(bfm.predict_labels(judge.model, images), requested)
    return {"accuracy_by_target": acc_t, "per_class_accuracy_by_target": per_t,
            "accuracy_by_evaluator": acc_e, "per_class_accuracy_by_evaluator": per_e}, images


def save_grid(images, path):
    """10x10 grid (row r = class r) of images in [0, 1], 302x302 px; returns the grid tensor."""
    from torchvision.utils import make_grid, save_image
    grid = make_grid(images, nrow=10, padding=2)
    save_image(grid, str(path))
    return grid


def surrogate_stage(cfg, aux, paths, device):
    """The attacker's surrogate of the API (corrected variant): (model or None, its info).

    Trained once per run on the auxiliary images and the API's labels, kept in models/surrogate.pt
    (a resumed run loads it).
    """
    recipe = cfg["recipe"]
    if recipe is None or recipe.get("surrogate_weight", 0) <= 0:
        return None, None
    path = paths["models"] / "surrogate.pt"
    if path.is_file():
        ckpt = bfm.load_checkpoint(path, "surrogate")
        model = bfm.SurrogateClassifier()
        bfm.load_state_strict(model, ckpt["model"], path, "--resume")
        return model.to(device).eval().requires_grad_(False), ckpt["info"]
    model, acc = bfm.train_surrogate(*aux, cfg["seed"] + 4, device, recipe["surrogate_epochs"],
                                     max_batches=max_batches(cfg["flags"]))
    info = {"accuracy_on_aux_labels": acc}
    bfm.save_atomic({"kind": "surrogate", "model": model.state_dict(), "info": info}, path)
    print(f"surrogate classifier: accuracy {acc:.4f} on the API's labels of the auxiliary images")
    return model, info


def surrogate_report(surrogate, info, target, val_images):
    """The surrogate's fit, and (experimenter's view, not the attacker's) how often it agrees with the target."""
    if surrogate is None:
        return None
    images = bfm.to_unit(val_images)
    agree = (bfm.predict_labels(surrogate, images) == bfm.predict_labels(target, images)).float().mean().item()
    return dict(info, agreement_with_target_on_val=agree)


def train_gan_stage(cfg, aux, oracle, target, judge, paths, device, logger, surrogate=None):
    """Train G and D (resumable per checkpoint); returns (g, history, seconds)."""
    flags = cfg["flags"]
    variant, nz = flags["variant"], flags["dim_initial_vec"]
    recipe = dict(cfg["recipe"] or {}, batch_size=flags["gan_batch_size"])
    last_path = paths["models"] / "gan_last.pt"
    bfm.set_seed(cfg["seed"] + 1)
    g, d = bfm.Generator(input_dim=nz).to(device), bfm.Discriminator().to(device)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, variant, recipe)
    start, history, seconds = 0, [], 0.0
    if last_path.is_file():
        ckpt = bfm.load_checkpoint(last_path, "gan")
        g.load_state_dict(ckpt["g"])
        d.load_state_dict(ckpt["d"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        start, history, seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        oracle.queries = ckpt["queries"]
        bfm.set_rng_state(ckpt["rng"])
        print(f"resuming the GAN after epoch {start}")
    g_train = bfm.maybe_data_parallel(g, device, flags["ngpu"])
    d_train = bfm.maybe_data_parallel(d, device, flags["ngpu"])
    grid_noise, (eval_noise, eval_requested) = sample_noise(cfg, device), eval_requests(cfg, device)
    aux_images, aux_labels = aux
    epochs = flags["epochs_gan"]
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        if variant == "blog":
            loss_g, loss_d = bfm.gan_epoch_blog(g_train, d_train, opt_g, opt_d, aux_images, aux_labels, oracle,
                                                nz, flags["gan_batch_size"], device, max_batches(flags))
        else:
            bfm.set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, epochs)
            loss_g, loss_d = bfm.gan_epoch_corrected(g_train, d_train, opt_g, opt_d, aux_images, aux_labels,
                                                     nz, device, recipe, surrogate=surrogate,
                                                     max_batches=max_batches(flags))
        seconds += time.time() - t0
        for name, value in (("G", loss_g), ("D", loss_d)):
            check_finite(value, f"GAN {name} loss at epoch {epoch}", last_path)
        metrics, _ = attack_accuracies(g, target, judge, eval_noise, eval_requested, variant)
        grid = save_grid(bfm.generator_images(g, bfm.grid_labels(10), grid_noise, variant),
                         paths["samples"] / f"epoch_{epoch:03d}.png")
        history.append({"epoch": epoch, "loss_g": loss_g, "loss_d": loss_d,
                        **{k: v for k, v in metrics.items() if not k.startswith("per_class")}})
        logger.scalar("gan/loss_g", loss_g, epoch)
        logger.scalar("gan/loss_d", loss_d, epoch)
        for key in ("accuracy_by_target", "accuracy_by_evaluator"):
            logger.scalar(f"attack/{key}", metrics[key], epoch)
        logger.image("samples", grid, epoch)
        if epoch % flags["checkpoint_every"] == 0 or epoch == epochs:
            bfm.save_atomic(gan_checkpoint(g, d, opt_g, opt_d, epoch, cfg, history, oracle.queries, seconds),
                            last_path)
            logger.commit()
        if epoch % 10 == 0:
            bfm.save_atomic({"kind": "gan_weights", "g": g.state_dict(), "d": d.state_dict(), "epoch": epoch,
                             "config": cfg}, paths["models"] / f"gan_epoch_{epoch:03d}.pt")
        summary = " ".join(f"{k.replace('accuracy_by_', 'acc/')} {v:.3f}" for k, v in metrics.items()
                           if not k.startswith("per_class"))
        print(f"gan epoch {epoch}/{epochs}: loss G {loss_g:.4f} D {loss_d:.4f} {summary} ({time.time() - t0:.0f}s)")
    return g, history, seconds


# ---------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------

def load_data(data_dir):
    """Prepare (if needed) and load every split as uint8 tensors."""
    bfm.prepare_data(data_dir)
    return {split: bfm.load_split(data_dir, split) for split in bfm.SPLITS}


def evaluator_path(flags):
    """Shared cache under the data folder, keyed by seed; a dry run's throwaway evaluator stays in its run."""
    if flags["dry_run"]:
        return Path(flags["model_dir"]) / "evaluator.pt"
    return Path(flags["data_dir"]) / bfm.CACHE_DIR / f"evaluator_seed{flags['evaluator_seed']}.pt"


def load_judge(flags, data, device):
    """The evaluation classifier (trained once per seed and data) and its reference rows."""
    judge, ckpt = bfm.get_judge(evaluator_path(flags), data["train"], data["test"], flags["evaluator_seed"],
                                device, dry_run=flags["dry_run"])
    info = {"seed": flags["evaluator_seed"], "test_accuracy": ckpt["test_accuracy"],
            "path": str(evaluator_path(flags))}
    return judge, info, ckpt["reference"]


def sample_noise(cfg, device):
    """The noise behind every sample grid of a run (10 per class), fixed by its seed."""
    return bfm.fixed_noise(100, cfg["flags"]["dim_initial_vec"], cfg["seed"] + 2, device)


def eval_requests(cfg, device):
    """(noise, requested classes) of the attack metrics, the same every epoch and at the end."""
    requested = bfm.grid_labels(cfg["flags"]["n_eval_per_class"])
    return bfm.fixed_noise(len(requested), cfg["flags"]["dim_initial_vec"], cfg["seed"] + 3, device), requested


def final_evaluation(cfg, g, target, judge, paths, device):
    """Metrics on n_eval_per_class samples per class from fixed noise, and the final grid."""
    variant = cfg["flags"]["variant"]
    noise, requested = eval_requests(cfg, device)
    metrics, images = attack_accuracies(g, target, judge, noise, requested, variant)
    metrics.update({k: v for k, v in judge.metrics(images, requested).items() if k not in metrics})
    grid_images = bfm.generator_images(g, bfm.grid_labels(10), sample_noise(cfg, device), variant)
    save_grid(grid_images, paths["samples"] / "final_grid.png")
    return metrics, grid_images


def write_report(history, metrics, grid_images, reference, path):
    """report.png: accuracy per GAN epoch, the final grid, per-class accuracy bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    epochs = [h["epoch"] for h in history]
    for key, label in (("accuracy_by_target", "judged by the target"),
                       ("accuracy_by_evaluator", "judged by the evaluator")):
        axes[0].plot(epochs, [h[key] for h in history], marker="o", label=label)
    axes[0].axhline(reference["real_test"]["accuracy_by_evaluator"], ls="--", c="gray", label="real test images")
    axes[0].axhline(0.1, ls=":", c="gray", label="chance")
    axes[0].set(xlabel="GAN epoch", ylabel="attack accuracy", ylim=(0, 1.02), title="requested class recognised")
    axes[0].legend()
    axes[1].imshow(make_grid(grid_images, nrow=10, padding=2).permute(1, 2, 0).numpy())
    axes[1].set(title="final samples (row r = class r)")
    axes[1].axis("off")
    x = torch.arange(bfm.N_CLASSES).float()
    axes[2].bar(x - 0.2, metrics["per_class_accuracy_by_target"], 0.4, label="target")
    axes[2].bar(x + 0.2, metrics["per_class_accuracy_by_evaluator"], 0.4, label="evaluator")
    axes[2].set(xticks=range(10), xlabel="requested class", ylabel="accuracy", ylim=(0, 1.15),
                title=f"per class (FID_eval {metrics['fid_evaluator']:.1f}, KNN {metrics['knn_dist']:.1f})")
    axes[2].legend(loc="upper center", ncol=2)  # above the bars, which are near 1 when the attack works
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_results(cfg, paths, results, history, metrics, grid_images, reference):
    bfm.write_json_atomic(results, paths["run"] / RESULTS)
    write_report(history, metrics, grid_images, reference, paths["run"] / "report.png")
    print(f"attack accuracy: {metrics['accuracy_by_evaluator']:.3f} by the evaluator, "
          f"{metrics['accuracy_by_target']:.3f} by the target; FID_eval {metrics['fid_evaluator']:.2f}, "
          f"KNN {metrics['knn_dist']:.2f}; results in {paths['run'] / RESULTS}")


def run(args):
    """Train the target, attack it, evaluate; everything lands in the run folder."""
    if args.resume:
        saved = load_run_config(args.resume, "--resume")
        if (Path(args.resume) / RESULTS).exists():
            raise bfm.UserError(f"{args.resume} is already finished ({RESULTS} is there); start a new run "
                                "with another --run_dir")
        args = argparse.Namespace(**dict(saved["flags"], resume=args.resume, evaluate=None, seeds=None))
    validate_args(args)
    paths = resolve_paths(args)
    if not args.resume:
        refuse_existing_run(paths["run"])
    make_run_dirs(paths)
    device = bfm.select_device(args.ngpu, args.devicen)
    print(f"device: {device}")
    cfg = run_config(args, paths, device)
    if args.resume:
        cfg["recipe"] = saved["recipe"]  # the run's own recipe, even if the defaults changed since
    flags = cfg["flags"]
    seconds = {}
    t0 = time.time()
    data = load_data(Path(flags["data_dir"]))
    seconds["data"] = time.time() - t0
    if not flags["training_flag"]:
        t0 = time.time()
        target, val_acc = load_target_stage(flags, paths, device)
        seconds["target"] = time.time() - t0
    # The inputs are good: only now does the folder become a run (and refuse to be overwritten).
    if not args.resume:
        bfm.write_json_atomic(cfg, paths["run"] / CONFIG)
    logger = Logger(paths["tensorboard"])
    try:
        if flags["training_flag"]:
            target, val_acc, seconds["target"] = train_target_stage(cfg, data, paths, device, logger)
        test_acc = bfm.classifier_accuracy(target, *data["test"], max_batches=max_batches(flags))
        print(f"target model: val accuracy {val_acc:.4f}, test accuracy {test_acc:.4f}")

        t0 = time.time()
        judge, evaluator, reference = load_judge(flags, data, device)
        seconds["evaluator"] = time.time() - t0

        # The attacker labels its auxiliary images through the API, once.
        oracle = bfm.LabelOracle(target)
        aux_images = data[flags["aux_split"]][0]
        aux_labels = oracle(bfm.to_unit(aux_images))
        t0 = time.time()
        surrogate, surrogate_info = surrogate_stage(cfg, (aux_images, aux_labels), paths, device)
        seconds["surrogate"] = time.time() - t0
        g, history, seconds["gan"] = train_gan_stage(cfg, (aux_images, aux_labels), oracle, target, judge,
                                                     paths, device, logger, surrogate)
        metrics, grid_images = final_evaluation(cfg, g, target, judge, paths, device)
        results = {"target": {"val_accuracy": val_acc, "test_accuracy": test_acc},
                   "attack": {"variant": flags["variant"], "queries": oracle.queries, **metrics,
                              "surrogate": surrogate_report(surrogate, surrogate_info, target, data["val"][0])},
                   "reference": reference, "evaluator": evaluator, "history": history,
                   "seconds": {k: round(v, 2) for k, v in seconds.items()}}
        write_results(cfg, paths, results, history, metrics, grid_images, reference)
    finally:
        logger.close()
    return results


def evaluate_run(run_dir):
    """--evaluate: recompute a run's metrics from its saved target and generator."""
    cfg = load_run_config(run_dir, "--evaluate")
    flags = cfg["flags"]
    paths = {"run": Path(run_dir).resolve(), "models": Path(flags["model_dir"]),
             "samples": Path(flags["sample_dir"])}
    device = bfm.select_device(flags["ngpu"], flags["devicen"])
    data = load_data(Path(flags["data_dir"]))
    target_path = paths["models"] / "target_best.pt"
    target_ckpt = bfm.load_checkpoint(target_path, "target")
    target = bfm.TargetModel()
    bfm.load_state_strict(target, target_ckpt["model"], target_path, "--evaluate")
    target = target.to(device).eval()
    ckpt = bfm.load_checkpoint(paths["models"] / "gan_last.pt", "gan", what="--evaluate")
    g = bfm.Generator(input_dim=flags["dim_initial_vec"])
    bfm.load_state_strict(g, ckpt["g"], paths["models"] / "gan_last.pt", "--evaluate")
    g = g.to(device)
    judge, evaluator, reference = load_judge(flags, data, device)
    metrics, grid_images = final_evaluation(cfg, g, target, judge, paths, device)
    old = {}
    if (paths["run"] / RESULTS).is_file():
        old = json.loads((paths["run"] / RESULTS).read_text())
    results = dict(old, attack={"variant": flags["variant"], "queries": ckpt["queries"], **metrics,
                                "surrogate": old.get("attack", {}).get("surrogate")},
                   reference=reference, evaluator=evaluator, history=ckpt["history"])
    results.setdefault("target", {"val_accuracy": target_ckpt["val_accuracy"],
                                  "test_accuracy": bfm.classifier_accuracy(target, *data["test"])})
    write_results(cfg, paths, results, ckpt["history"], metrics, grid_images, reference)
    return results


SUMMARY_KEYS = (("target", "test_accuracy"), ("attack", "accuracy_by_evaluator"), ("attack", "accuracy_by_target"),
                ("attack", "fid_evaluator"), ("attack", "knn_dist"))


def check_same_flags(saved_cfg, run_args, run_dir):
    """A sweep reuses a seed's earlier run only if it was made with the flags asked for now."""
    wanted = {k: v for k, v in run_flags(run_args).items() if k not in PATH_FLAGS}
    differ = [f"--{k} {saved_cfg['flags'].get(k)} there, {v} now" for k, v in wanted.items()
              if saved_cfg["flags"].get(k) != v]
    if differ:
        raise bfm.UserError(f"{run_dir} was run with other flags ({'; '.join(differ)}); "
                            "pass the same flags or another --run_dir")


def run_seeds(args):
    """--seeds: one run per seed in RUN_DIR/seed_<S>, then mean ± std of the headline metrics."""
    if args.resume:
        raise bfm.UserError("--seeds cannot be combined with --resume; resume each RUN_DIR/seed_<S> on its own")
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
    summary = {}
    for section, key in SUMMARY_KEYS:
        values = torch.tensor([r[section][key] for r in all_results.values()], dtype=torch.float64)
        std = values.std().item() if len(values) > 1 else 0.0
        summary[f"{section}.{key}"] = {"mean": values.mean().item(), "std": std, "values": values.tolist()}
        print(f"{section}.{key}: {values.mean().item():.4f} ± {std:.4f} over seeds {list(all_results)}")
    bfm.write_json_atomic({"seeds": list(all_results), "summary": summary}, base / "seeds_summary.json")
    return summary


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
    except bfm.UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f" --resume {args.resume or args.run_dir}" if (args.resume or args.run_dir) else " --resume RUN_DIR"
        print(f"main.py: interrupted; the last checkpoint is intact, continue with python main.py{where}",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
