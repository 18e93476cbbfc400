"""The attacker's stages: it holds its own images and the provider's API, and nothing else.

run_inversion labels the attacker's images through the API, fits a surrogate of the API to those
labels (corrected variant) and trains the conditional GAN. It receives the attacker's view only
(attacker_config: its seed, recipe and settings, the number of labels the API answers; its
images; the API; its own output files). It is a generator that yields G after each epoch, so the
experimenter measures G from outside (complete(steps, on_epoch)); the attack never holds the
target, the evaluator, the judge, the data folder or the experimenter's monitor.
"""
import time
from dataclasses import dataclass, field

import torch

import bf_mnist as bfm
from attacklab import sampling
from attacklab.api import as_labels
from attacklab.data import to_unit
from attacklab.protocols import protocol_for
from attacklab.report import save_grid
from attacklab.runtime import (check_finite, load_checkpoint, load_model, maybe_data_parallel, rng_state, save_checkpoint,
                               set_rng_state, set_seed, unwrap)


# The flags that are the attacker's own settings; everything else in config.json is the experimenter's.
ATTACKER_FLAGS = ("variant", "dim_initial_vec", "gan_batch_size", "epochs_gan", "ngpu", "checkpoint_every", "dry_run")


def n_classes(cfg):
    """How many labels the API answers (public: the attacker sees the answers' range)."""
    return cfg["flags"]["n_classes"] if "n_classes" in cfg["flags"] else protocol_for(cfg["flags"]).n_classes


def attacker_config(cfg):
    """The part of the run's config the attacker knows: its seed, its recipe, its settings, the API's label count."""
    flags = {k: cfg["flags"][k] for k in ATTACKER_FLAGS if k in cfg["flags"]}
    return {"seed": cfg["seed"], "recipe": cfg["recipe"], "flags": dict(flags, n_classes=n_classes(cfg))}


def attacker_paths(paths):
    """The attacker's own outputs: its checkpoints (models/gan_last.pt, surrogate.pt) and its sample grids."""
    return {"models": paths["models"], "samples": paths["samples"]}


def complete(steps, on_epoch=None):
    """Run an attack generator to its end, handing each epoch's G to on_epoch(epoch, g); returns its outcome."""
    while True:
        try:
            epoch, g = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_epoch is not None:
            on_epoch(epoch, g)


@dataclass
class InversionOutcome:
    """What the attack produced: the generator, the surrogate (or None), per-epoch history, seconds per stage."""
    g: object
    surrogate: object = None
    surrogate_info: dict = None
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def surrogate_stage(cfg, images, labels, paths, device, max_batches=None):
    """The attacker's surrogate of the API (or (None, None) when the recipe has none).

    Trained once per run on the attacker's images and the API's labels for them, kept in
    models/surrogate.pt (a resumed run loads it).
    """
    recipe = cfg["recipe"]
    if recipe.get("surrogate_weight", 0) <= 0:
        return None, None
    path = paths["models"] / "surrogate.pt"
    if path.is_file():
        return load_surrogate(path, device, n_classes(cfg), recipe["surrogate_models"])
    members = [bfm.train_surrogate(images, labels, cfg["seed"] + 4 + 1000 * i, device, recipe["surrogate_epochs"],
                                   max_batches=max_batches, n_classes=n_classes(cfg))
               for i in range(recipe["surrogate_models"])]
    model, acc = members[0] if len(members) == 1 else (bfm.SurrogateEnsemble([m for m, _ in members]).eval(),
                                                       sum(a for _, a in members) / len(members))
    info = {"accuracy_on_aux_labels": acc}
    save_checkpoint("surrogate", path, model=model.state_dict(), info=info)
    print(f"surrogate classifier: accuracy {acc:.4f} on the API's labels of the auxiliary images")
    return model, info


def run_inversion(cfg, api, aux_images, paths, device, logger, max_batches=None):
    """The whole inversion attack: label the aux images through the API, surrogate, GAN.

    A generator: yields (epoch, G) after each GAN epoch is checkpointed; returns an InversionOutcome.
    cfg is attacker_config's, paths attacker_paths'.
    """
    aux_images, answers = label_own_images(cfg, api, aux_images)
    aux_labels = as_labels(answers)
    t0 = time.time()
    surrogate, info = surrogate_stage(cfg, aux_images, answers, paths, device, max_batches)
    seconds = {"surrogate": time.time() - t0}
    g, history, seconds["gan"] = yield from train_gan_stage(cfg, (aux_images, aux_labels), api, paths, device, logger,
                                                            surrogate, max_batches)
    return InversionOutcome(g, surrogate, info, history, seconds)


def label_own_images(cfg, api, aux_images):
    """The attacker's first look at the target, once per image: (the images it asked about, the API's answers).

    Under a query budget smaller than its collection it asks about `budget` of them, drawn by its seed.
    """
    if api.budget is not None and api.budget < len(aux_images):
        keep = torch.randperm(len(aux_images), generator=torch.Generator().manual_seed(cfg["seed"]))[:api.budget]
        aux_images = aux_images[keep.sort().values]
        print(f"query budget {api.budget}: the attacker labels {api.budget} of its images and trains on those")
    return aux_images, targets_from(api(to_unit(aux_images)))


def targets_from(answers):
    """What the surrogate learns from: labels as they are, probability vectors normalised (rounded ones too)."""
    if answers.dim() == 1:
        return answers
    return answers.float() / answers.float().sum(1, keepdim=True).clamp(min=1e-12)


def new_generator(cfg):
    """The run's G, untrained, with the run's noise size."""
    return bfm.Generator(input_dim=cfg["flags"]["dim_initial_vec"])


def _build_gan(cfg, device):
    """G, D and their optimizers; seeded by seed + 1."""
    set_seed(cfg["seed"] + 1)
    g, d = new_generator(cfg).to(device), bfm.Discriminator().to(device)
    return g, d, bfm.make_gan_optimizers(g, d, cfg["recipe"])


def _gan_state(g, d, opt_g, opt_d):
    """The networks' part of gan_last.pt."""
    return dict(g=unwrap(g).state_dict(), d=unwrap(d).state_dict(), opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict())


def _resume_gan(path, g, d, opt_g, opt_d, api):
    """Load gan_last.pt into G, D, their optimizers, the API's count and the RNG.

    Returns (start epoch, history, seconds).
    """
    if not path.is_file():
        return 0, [], 0.0
    ckpt = load_checkpoint(path, "gan")
    g.load_state_dict(ckpt["g"])
    d.load_state_dict(ckpt["d"])
    opt_g.load_state_dict(ckpt["opt_g"])
    opt_d.load_state_dict(ckpt["opt_d"])
    api.load_state_dict({"queries": ckpt["queries"]})
    set_rng_state(ckpt["rng"])
    print(f"resuming the GAN after epoch {ckpt['epoch']}")
    return ckpt["epoch"], ckpt["history"], ckpt["seconds"]


def sample_noise(cfg, device):
    """The noise behind every sample grid of a run (10 per class), fixed by its seed."""
    return sampling.fixed_noise(10 * n_classes(cfg), cfg["flags"]["dim_initial_vec"], cfg["seed"] + 2, device)


def train_gan_stage(cfg, aux, api, paths, device, logger, surrogate=None, max_batches=None):
    """Train G and D (resumable per checkpoint), yielding (epoch, G) after each epoch's checkpoint;
    returns (G, history, seconds). aux: (images, the API's labels) for the GAN."""
    flags, variant, epochs = cfg["flags"], cfg["flags"]["variant"], cfg["flags"]["epochs_gan"]
    recipe = dict(cfg["recipe"], batch_size=flags["gan_batch_size"], n_classes=n_classes(cfg), epochs=epochs)
    last_path = paths["models"] / "gan_last.pt"
    g, d, (opt_g, opt_d) = _build_gan(cfg, device)
    start, history, seconds = _resume_gan(last_path, g, d, opt_g, opt_d, api)
    g_train, d_train = (maybe_data_parallel(m, device, flags["ngpu"]) for m in (g, d))
    grid_noise = sample_noise(cfg, device)
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        bfm.set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, epochs)
        loss_g, loss_d = bfm.GAN_EPOCH[variant](g_train, d_train, opt_g, opt_d, *aux, dict(recipe, epoch=epoch),
                                                device, flags["dim_initial_vec"], api=api, surrogate=surrogate,
                                                max_batches=max_batches)
        seconds += time.time() - t0
        for name, value in (("G", loss_g), ("D", loss_d)):
            check_finite(value, f"GAN {name} loss at epoch {epoch}", last_path)
        grid = save_grid(sampling.generator_images(g, sampling.grid_labels(10, n_classes(cfg)), grid_noise,
                                                   bfm.RESCALE_OUTPUT[variant]),
                         paths["samples"] / f"epoch_{epoch:03d}.png")
        history.append({"epoch": epoch, "loss_g": loss_g, "loss_d": loss_d})
        _log_epoch(logger, epoch, loss_g, loss_d, grid)
        if epoch % flags["checkpoint_every"] == 0 or epoch == epochs:
            save_checkpoint("gan", last_path, **_gan_state(g, d, opt_g, opt_d), epoch=epoch, config=cfg,
                            history=history, queries=api.queries, seconds=seconds, rng=rng_state())
            logger.commit()
        if epoch % 10 == 0:
            save_checkpoint("gan_weights", paths["models"] / f"gan_epoch_{epoch:03d}.pt", g=g.state_dict(),
                            d=d.state_dict(), epoch=epoch, config=cfg)
        print(f"gan epoch {epoch}/{epochs}: loss G {loss_g:.4f} D {loss_d:.4f} ({time.time() - t0:.0f}s)")
        yield epoch, g
    return g, history, seconds


def _log_epoch(logger, epoch, loss_g, loss_d, grid):
    """One GAN epoch's TensorBoard points (held until its checkpoint is written)."""
    logger.scalar("gan/loss_g", loss_g, epoch)
    logger.scalar("gan/loss_d", loss_d, epoch)
    logger.image("samples", grid, epoch)


def load_generator(cfg, path, device):
    """G from a run's gan_last.pt: (g on device, the checkpoint)."""
    g, ckpt = load_model(new_generator(cfg), path, "gan", "--evaluate", key="g")
    return g.to(device), ckpt


def load_surrogate(path, device, n_classes, members=1):
    """The surrogate a run saved (an ensemble of `members`), or (None, None) when it trained none."""
    if not path.is_file():
        return None, None
    model = (bfm.SurrogateClassifier(n_classes) if members == 1
             else bfm.SurrogateEnsemble([bfm.SurrogateClassifier(n_classes) for _ in range(members)]))
    model, ckpt = load_model(model, path, "surrogate", "the saved surrogate")
    return model.to(device).eval().requires_grad_(False), ckpt["info"]
