"""The provider: trains the target model on its private data (resumable per epoch), or loads a saved one."""
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attacklab import defences
from attacklab.classifiers import classifier_accuracy, train_classifier_epoch, train_epoch_with
from attacklab.data import batch_indices
from attacklab.protocols import protocol_for
from attacklab.runtime import (UserError, check_finite, copy_atomic, load_checkpoint, load_model,
                               maybe_data_parallel, rng_state, save_checkpoint, set_rng_state, set_seed,
                               write_json_atomic)

DP_REPORT = "target_dp.json"  # DP-SGD's report in the models folder, written once its training has finished


def train_target_stage(cfg, private, paths, device, logger, max_batches=None):
    """Train f on private = {'train', 'val'} with the run's defence: (best-by-val model, its val accuracy, seconds, defence report)."""
    flags = cfg["flags"]
    last_path, best_path = paths["models"] / "target_last.pt", paths["models"] / "target_best.pt"
    set_seed(cfg["seed"])
    model = defences.target_network(flags["defence"], protocol_for(flags).n_classes).to(device)
    state = {"best_val": -1.0, "seconds": 0.0}

    def end_of_epoch(epoch, loss, acc, seconds, extra=None, optimizer=None):
        """Keep the best model by val accuracy, log, print; checkpoint the epoch when training can resume."""
        val = classifier_accuracy(model, *private["val"], max_batches=max_batches)
        state["seconds"] += seconds
        if val > state["best_val"] and defences.selectable(flags, epoch):
            state["best_val"] = val
            save_checkpoint("target", best_path, model=model.state_dict(), epoch=epoch, val_accuracy=val, config=cfg)
        if optimizer is not None:
            save_checkpoint("target_state", last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            epoch=epoch, best_val=state["best_val"], seconds=state["seconds"], rng=rng_state())
        for tag, value in (("train_loss", loss), ("train_accuracy", acc), ("val_accuracy", val), *(extra or {}).items()):
            logger.scalar(f"target/{tag}", value, epoch)
        logger.commit()
        print(f"target epoch {epoch}/{flags['epochs_target_model']}: loss {loss:.4f} "
              f"train acc {acc:.4f} val acc {val:.4f} (best {state['best_val']:.4f})")

    dp_done = paths["models"] / DP_REPORT
    if flags["defence"] == "dp_sgd" and dp_done.is_file() and best_path.is_file():
        report = json.loads(dp_done.read_text())
        print("the DP-SGD target finished training earlier; reading it")
    elif flags["defence"] == "dp_sgd":  # Opacus' accountant is not checkpointed: an interrupted DP run trains again
        report = defences.train_dp_sgd(model, private["train"], private["val"], flags, device,
                                       defences.defence_strength(flags), max_batches, end_of_epoch)
        report["seconds"] = state["seconds"]
        write_json_atomic(report, dp_done)
    else:
        report = train_epochs(model, flags, private, device, last_path, max_batches, state, end_of_epoch)
    model, best = load_model(model, best_path, "target", "the best target checkpoint")
    state["seconds"] = report.pop("seconds", state["seconds"])
    report = {"name": flags["defence"], "strength": defences.defence_strength(flags), **report}
    return model.eval(), best["val_accuracy"], state["seconds"], report


def train_epochs(model, flags, private, device, last_path, max_batches, state, end_of_epoch):
    """The non-DP defences' epochs, resumable from target_last.pt: the defence's report (its terms' last values)."""
    optimizer = torch.optim.Adam(model.parameters(), fused=True)  # the article's Adam, one fused kernel
    start = 0
    if last_path.is_file():
        saved = load_checkpoint(last_path, "target_state")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, state["best_val"], state["seconds"] = saved["epoch"], saved["best_val"], saved["seconds"]
        set_rng_state(saved["rng"])
        print(f"resuming the target model after epoch {start}")
    train_model = maybe_data_parallel(model, device, flags["ngpu"])
    (x_train, y_train), report = private["train"], {}
    steps = len(batch_indices(len(x_train), flags["batch_size"], False, max_batches))
    inside = defences.model_loss(flags)
    for epoch in range(start + 1, flags["epochs_target_model"] + 1):
        t0, extra = time.time(), {}
        if inside is not None:  # MID and BiDO read the network's insides (one device: no DataParallel)
            loss, acc, extra = train_epoch_with(model, optimizer, x_train, y_train, flags["batch_size"], device,
                                                inside, max_batches, desc=f"target {epoch}")
        else:
            loss_fn = training_loss(flags, steps * flags["epochs_target_model"], steps * (epoch - 1))
            loss, acc = train_classifier_epoch(train_model, optimizer, x_train, y_train, flags["batch_size"],
                                               device, max_batches, desc=f"target {epoch}", loss_fn=loss_fn)
            if isinstance(loss_fn, defences.ScheduledSmoothing):
                extra = {"smoothing": loss_fn.last_alpha}
        check_finite(loss, f"target model loss at epoch {epoch}", last_path)
        end_of_epoch(epoch, loss, acc, time.time() - t0, extra, optimizer)
        report = extra
    return report


def training_loss(flags, total_steps, step):
    """The provider's loss on logits: cross-entropy, or negative label smoothing on its schedule."""
    if flags["defence"] == "label_smoothing_neg":
        return defences.ScheduledSmoothing(defences.defence_strength(flags), total_steps, step)
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


def load_target(path, device, what, n_classes, defence="none"):
    """The target saved at path (trained with defence), in eval mode on device: (model, its checkpoint)."""
    model, ckpt = load_model(defences.target_network(defence, n_classes), path, "target", what)
    return model.to(device).eval(), ckpt


def load_target_stage(flags, paths, device):
    """Load the provider's model from --train_model_dir instead of training it; copy it into the run."""
    source = find_target_checkpoint(flags["train_model_dir"])
    model, ckpt = load_target(source, device, "--train_model_dir", protocol_for(flags).n_classes, flags["defence"])
    dest = paths["models"] / "target_best.pt"
    if source.resolve() != dest.resolve():
        copy_atomic(source, dest)  # the run folder stays self-contained
    print(f"loaded the target model from {source} (val accuracy {ckpt['val_accuracy']:.4f})")
    return model, ckpt["val_accuracy"]


def saved_defence_report(flags, models_dir):
    """The defence of a target trained earlier: its name and strength (and DP-SGD's report, when it is there)."""
    report = {"name": flags["defence"], "strength": defences.defence_strength(flags)}
    dp_done = Path(models_dir) / DP_REPORT
    if flags["defence"] == "dp_sgd" and dp_done.is_file():
        report.update({k: v for k, v in json.loads(dp_done.read_text()).items() if k != "seconds"})
    return report


def provider_stage(cfg, private, paths, device, logger, loaded=None, max_batches=None):
    """The provider's target (trained now, or loaded before): (model, target info for results.json, seconds)."""
    flags = cfg["flags"]
    if loaded is None:
        target, val_acc, seconds, report = train_target_stage(cfg, private, paths, device, logger, max_batches)
    else:
        ((target, val_acc), seconds), report = loaded, saved_defence_report(flags, paths["models"])
    info = {"val_accuracy": val_acc,
            "test_accuracy": classifier_accuracy(target, *private["test"], max_batches=max_batches), "defence": report}
    print(f"target model: val accuracy {val_acc:.4f}, test accuracy {info['test_accuracy']:.4f} "
          f"(digits {', '.join(map(str, protocol_for(flags).private_classes))})")
    return target, info, seconds
