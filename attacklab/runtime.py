"""Errors, seeds and RNG state, the device, atomic files, checkpoints and progress bars: one place each."""
import contextlib
import json
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import tqdm


class UserError(Exception):
    """A problem the user can fix; main.py prints it as one line and exits with status 2."""


def retired_error(what, commit):
    """One sentence for a recipe entry or flag that has left the code: where its results are, how to rerun it."""
    return (f"{what} was tried and not adopted, and has left the code; docs/dead_ends.md gives its results, and "
            f"`git checkout {commit}` reruns it")


# ---------------------------------------------------------------------------
# seed and device
# ---------------------------------------------------------------------------

def set_seed(seed):
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_fork(seed, device):
    """Run a block with its own seeded RNG stream; the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def select_device(ngpu, devicen):
    """Return the device to train on: cuda:devicen when CUDA is usable and ngpu > 0, else the CPU."""
    n_visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ngpu <= 0:
        return torch.device("cpu")
    if n_visible == 0:
        if devicen != 0 or ngpu > 1:
            raise UserError(
                f"--devicen {devicen} --ngpu {ngpu} asks for a GPU but this machine has none; "
                "drop those flags or pass --ngpu 0 to run on the CPU")
        return torch.device("cpu")
    if devicen < 0 or devicen + ngpu > n_visible:
        raise UserError(
            f"--devicen {devicen} --ngpu {ngpu} needs GPUs {devicen}..{devicen + ngpu - 1} but only "
            f"{n_visible} GPU(s) are visible; choose --devicen/--ngpu within 0..{n_visible - 1}")
    return torch.device(f"cuda:{devicen}")


def rng_state():
    """Everything needed to continue the global random streams exactly (for checkpoints)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()[1],
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def maybe_data_parallel(model, device, ngpu):
    """Wrap in DataParallel over GPUs devicen..devicen+ngpu-1 when more than one is asked for."""
    if device.type == "cuda" and ngpu > 1:
        return nn.DataParallel(model, list(range(device.index, device.index + ngpu)))
    return model


def unwrap(model):
    """The bare module inside a DataParallel (for state dicts)."""
    return model.module if isinstance(model, nn.DataParallel) else model


def progress(iterable, desc):
    """A progress bar on a terminal only: a run piped to a file gets no carriage-return updates."""
    return tqdm.tqdm(iterable, desc=desc, leave=False, disable=None)


# ---------------------------------------------------------------------------
# files: atomic writes
# ---------------------------------------------------------------------------

def _replace_atomically(path, write):
    """Write through a temporary file in the same folder, then rename it over path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj, path):
    """torch.save obj to path so that a kill at any moment leaves the old or the new file."""
    _replace_atomically(path, lambda fh: torch.save(obj, fh))


def write_json_atomic(data, path):
    """Write data as indented JSON to path atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    _replace_atomically(path, lambda fh: fh.write(text.encode()))


def copy_atomic(source, dest):
    """Copy a file so that dest is either absent/old or complete."""
    data = Path(source).read_bytes()
    _replace_atomically(dest, lambda fh: fh.write(data))


# ---------------------------------------------------------------------------
# checkpoints: one schema per kind, one save, one load
# ---------------------------------------------------------------------------

# The keys each kind of checkpoint holds; save_checkpoint refuses a dict that lacks one.
CHECKPOINT_SCHEMAS = {
    "target": ("model", "epoch", "val_accuracy", "config"),
    "target_state": ("model", "optimizer", "epoch", "best_val", "seconds", "rng"),
    "gan": ("g", "d", "opt_g", "opt_d", "epoch", "config", "history", "queries", "seconds", "rng"),
    "gan_weights": ("g", "d", "epoch", "config"),
    "surrogate": ("model", "info"),
    "evaluator": ("model", "seed", "data", "test_accuracy", "train_feats", "reference", "dry_run"),
    "judge": ("model", "seed", "data", "info"),
}


def save_checkpoint(kind, path, **fields):
    """Write a checkpoint of the given kind atomically: {'kind': kind, **fields}, every schema key present."""
    missing = [k for k in CHECKPOINT_SCHEMAS[kind] if k not in fields]
    if missing:
        raise ValueError(f"a {kind} checkpoint needs {missing}")
    save_atomic({"kind": kind, **fields}, path)


def load_checkpoint(path, kind, what="checkpoint"):
    """Load a checkpoint written by this project (weights_only) and check it is of the given kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; pass the path of a file written by main.py")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe content
        raise UserError(f"{what} {path} cannot be read ({type(exc).__name__}): it is truncated or not "
                        "a checkpoint written by main.py; pass another file") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise UserError(f"{what} {path} is not a {kind} checkpoint written by main.py; pass another file")
    missing = [k for k in CHECKPOINT_SCHEMAS[kind] if k not in ckpt and k != "config"]
    if missing:
        raise UserError(f"{what} {path} lacks {', '.join(missing)}: it was written by another version; "
                        "pass a file written by this main.py")
    return ckpt


def load_weights(model, state, path, what):
    """load_state_dict that turns an architecture mismatch into a UserError; returns the model."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{what} {path} holds weights of another architecture ({first}); "
                        "pass a file written by main.py with the same model sizes") from None
    return model


def load_model(model, path, kind, what, key="model"):
    """Read a checkpoint of the given kind and load its weights into model: returns (model, checkpoint)."""
    ckpt = load_checkpoint(path, kind, what)
    return load_weights(model, ckpt[key], path, what), ckpt


def check_finite(value, what, checkpoint):
    """Stop with one sentence when a loss is NaN or infinite; the last checkpoint stays as it was."""
    if not math.isfinite(value):
        raise UserError(f"{what} is {value}: training diverged; the last good checkpoint {checkpoint} "
                        "is kept (lower the learning rate or change --seed, then run again)")
