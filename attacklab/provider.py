"""The provider: trains the target model on its private data (resumable per epoch), or loads a saved one."""
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import bf_mnist as bfm
from attacklab.protocols import protocol_for
from attacklab.classifiers import classifier_accuracy, smoothed_cross_entropy, train_classifier_epoch
from attacklab.runtime import (UserError, check_finite, copy_atomic, load_checkpoint, load_model,
                               maybe_data_parallel, rng_state, save_checkpoint, set_rng_state, set_seed)


def train_target_stage(cfg, private, paths, device, logger, max_batches=None):
    """Train f on private = {'train', 'val'}; keep and return (best-by-val model, its val accuracy, seconds)."""
    flags = cfg["flags"]
    last_path, best_path = paths["models"] / "target_last.pt", paths["models"] / "target_best.pt"
    set_seed(cfg["seed"])
    model = bfm.TargetModel(n_classes=protocol_for(flags).n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)  # the article's Adam, one fused kernel
    start, best_val, seconds = 0, -1.0, 0.0
    if last_path.is_file():
        state = load_checkpoint(last_path, "target_state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best_val, seconds = state["epoch"], state["best_val"], state["seconds"]
        set_rng_state(state["rng"])
        print(f"resuming the target model after epoch {start}")
    train_model = maybe_data_parallel(model, device, flags["ngpu"])
    (x_train, y_train), (x_val, y_val) = private["train"], private["val"]
    for epoch in range(start + 1, flags["epochs_target_model"] + 1):
        t0 = time.time()
        loss, acc = train_classifier_epoch(train_model, optimizer, x_train, y_train, flags["batch_size"],
                                           device, max_batches, desc=f"target {epoch}", loss_fn=training_loss(flags))
        check_finite(loss, f"target model loss at epoch {epoch}", last_path)
        val = classifier_accuracy(model, x_val, y_val, max_batches=max_batches)
        seconds += time.time() - t0
        if val > best_val:
            best_val = val
            save_checkpoint("target", best_path, model=model.state_dict(), epoch=epoch, val_accuracy=val, config=cfg)
        save_checkpoint("target_state", last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        epoch=epoch, best_val=best_val, seconds=seconds, rng=rng_state())
        for tag, value in (("train_loss", loss), ("train_accuracy", acc), ("val_accuracy", val)):
            logger.scalar(f"target/{tag}", value, epoch)
        logger.commit()
        print(f"target epoch {epoch}/{flags['epochs_target_model']}: loss {loss:.4f} "
              f"train acc {acc:.4f} val acc {val:.4f} (best {best_val:.4f})")
    model, best = load_model(model, best_path, "target", "the best target checkpoint")
    return model.eval(), best["val_accuracy"], seconds


def training_loss(flags):
    """The provider's loss: cross-entropy, or with --defence label_smoothing_neg, smoothing by --smoothing (< 0)."""
    if flags["defence"] == "label_smoothing_neg":
        return smoothed_cross_entropy(flags["smoothing"])
    return F.cross_entropy


def find_target_checkpoint(path):
    """--train_model_dir may name the file, a models/ folder or a run folder."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "target_best.pt", path / "models" / "target_best.pt"):
            if candidate.is_file():
                return candidate
        raise UserError(f"--train_model_dir {path} holds no target_best.pt; pass the file written by main.py")
    return path


def load_target(path, device, what, n_classes):
    """The target saved at path, in eval mode on device: (model, its checkpoint)."""
    model, ckpt = load_model(bfm.TargetModel(n_classes=n_classes), path, "target", what)
    return model.to(device).eval(), ckpt


def load_target_stage(flags, paths, device):
    """Load the provider's model from --train_model_dir instead of training it; copy it into the run."""
    source = find_target_checkpoint(flags["train_model_dir"])
    model, ckpt = load_target(source, device, "--train_model_dir", protocol_for(flags).n_classes)
    dest = paths["models"] / "target_best.pt"
    if source.resolve() != dest.resolve():
        copy_atomic(source, dest)  # the run folder stays self-contained
    print(f"loaded the target model from {source} (val accuracy {ckpt['val_accuracy']:.4f})")
    return model, ckpt["val_accuracy"]


def provider_stage(cfg, private, paths, device, logger, loaded=None, max_batches=None):
    """The provider's target (trained now, or loaded before): (model, target info for results.json, seconds)."""
    flags = cfg["flags"]
    if loaded is None:
        target, val_acc, seconds = train_target_stage(cfg, private, paths, device, logger, max_batches)
    else:
        (target, val_acc), seconds = loaded
    info = {"val_accuracy": val_acc,
            "test_accuracy": classifier_accuracy(target, *private["test"], max_batches=max_batches)}
    print(f"target model: val accuracy {val_acc:.4f}, test accuracy {info['test_accuracy']:.4f} "
          f"(digits {', '.join(map(str, protocol_for(flags).private_classes))})")
    return target, info, seconds
