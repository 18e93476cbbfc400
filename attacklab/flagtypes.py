"""Flag types for main.py's parser: one-line errors, booleans that mean what they say, checked numbers."""
import argparse
import json
import math

from attacklab.runtime import UserError


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
    "surrogate_cutout": (lambda v: _number(v) and isinstance(v, int) and 0 <= v <= 28,
                         "the hidden square's side in pixels, a whole number from 0 (none) to 28"),
    "surrogate_models": (lambda v: _number(v) and isinstance(v, int) and v >= 1,
                         "how many surrogates: a whole number >= 1"),
    "surrogate_affine": (lambda v: isinstance(v, list) and len(v) == 2 and all(_number(x) and x >= 0 for x in v),
                         "[largest rotation in degrees, largest relative change of scale], both >= 0: [15, 0.1]"),
}


def recipe_error(recipe):
    """One sentence about the first recipe entry whose value is out of range, or None when all are good."""
    for key, (good, what) in RECIPE_CHECKS.items():
        if key in recipe and not good(recipe[key]):
            return f"--recipe {key}={json.dumps(recipe[key])}: {what}"
    return None


def recipe_with(recipe, items, retired=(), retired_error=None):
    """The recipe with --recipe KEY=VALUE items applied (VALUE as JSON), checked: a new dict, or UserError.

    `retired`: entries that have left the code, each refused with retired_error(key).
    """
    recipe = dict(recipe)
    for item in items:
        key, _, text = item.partition("=")
        if key in retired:
            raise UserError(f"--recipe {item}: {retired_error(key)}")
        if key not in recipe:
            raise UserError(f"--recipe {item}: no recipe entry {key!r}; choose from {', '.join(sorted(recipe))}")
        try:
            recipe[key] = json.loads(text)
        except ValueError:
            raise UserError(f"--recipe {item}: {text!r} is not a JSON value (numbers, null, [lists], \"strings\")") from None
    error = recipe_error(recipe)
    if error:
        raise UserError(error)
    return recipe
