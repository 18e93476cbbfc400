"""Flag types for main.py's parser: one-line errors, booleans that mean what they say, checked numbers."""
import argparse
import json
import math


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


def _number(value):
    """A finite int or float that is not a bool (JSON's true is not a weight)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# the --recipe entries whose values are checked: key -> (test, what a good value is)
RECIPE_CHECKS = {
    "lr_decay": (lambda v: v in (None, "linear", "linear_step"),
                 'choose null, "linear" (per epoch) or "linear_step" (per step)'),
    "g_average": (lambda v: _number(v) and 0 <= v < 1,
                  "the running average's decay is in [0, 1) (0: no average, 0.99: about the last 100 steps)"),
    "mode_seeking": (lambda v: _number(v) and v >= 0, "the term's weight is a number >= 0 (0: off)"),
    "surrogate_floor": (lambda v: _number(v) and v >= 0, "the cross-entropy below which an image is not pushed, >= 0"),
    "mmd_patch": (lambda v: _number(v) and isinstance(v, int) and 0 <= v <= 28,
                  "the patch side in pixels, a whole number from 0 (whole images) to 28"),
    "surrogate_cutout": (lambda v: _number(v) and isinstance(v, int) and 0 <= v <= 28,
                         "the hidden square's side in pixels, a whole number from 0 (none) to 28"),
    "surrogate_cutout_share": (lambda v: _number(v) and 0 < v <= 1,
                               "the share of images with a square hidden, in (0, 1]"),
    "surrogate_cutout_until": (lambda v: _number(v) and 0 < v <= 1,
                               "the share of the GAN's steps with a square hidden, in (0, 1] (1: all of them)"),
    "surrogate_balance": (lambda v: isinstance(v, bool), "write true or false"),
    "g_slots": (lambda v: _number(v) and isinstance(v, int) and 1 <= v <= 5,
                "drawings per class, a whole number from 1 to 5 (the slots sit after the classes in G's 10 inputs)"),
    "mmd_per_class": (lambda v: isinstance(v, bool), "write true or false"),
    "surrogate_models": (lambda v: _number(v) and isinstance(v, int) and v >= 1,
                         "how many surrogates: a whole number >= 1"),
    "surrogate_affine": (lambda v: isinstance(v, list) and len(v) == 2 and all(_number(x) and x >= 0 for x in v),
                         "[largest rotation in degrees, largest relative change of scale], both >= 0: [15, 0.1]"),
}


def recipe_error(recipe, free_inputs=0):
    """One sentence about the first recipe entry whose value is out of range, or None when all are good.

    free_inputs: how many of G's label inputs no class of the protocol uses (room for g_slots).
    """
    for key, (good, what) in RECIPE_CHECKS.items():
        if key in recipe and not good(recipe[key]):
            return f"--recipe {key}={json.dumps(recipe[key])}: {what}"
    if recipe.get("mmd_per_class") and recipe.get("mmd_patch", 0) > 0:
        return "--recipe mmd_per_class=true compares whole images; drop mmd_patch or set it to 0"
    slots = recipe.get("g_slots", 1)
    if 1 < slots and free_inputs < slots:
        return (f"--recipe g_slots={slots}: this protocol leaves {free_inputs} of G's label inputs free for "
                "slots; use g_slots=1" + (f" to {free_inputs}" if free_inputs > 1 else ""))
    return None
