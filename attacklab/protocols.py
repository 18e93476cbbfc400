"""Who holds which images: the provider's private data and the attacker's auxiliary images, per protocol.

Adding a protocol is one entry in PROTOCOLS: its private digits and a function that picks the
attacker's images from the prepared data. `disjoint` takes any split of the digits
(--private_digits): protocol_for(flags) builds it.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from attacklab.data import CACHE_DIR, N_CLASSES, SPLITS


def _aux_split(data, flags):
    """`same`: the attacker's images are one whole public split (the article's setting)."""
    return data[flags["aux_split"]]


def _aux_other_digits(classes):
    """`disjoint`: every image, of every split, of the digits the provider does not hold."""
    def pick(data, flags):
        parts = [(x[_member(y, classes)], y[_member(y, classes)]) for x, y in (data[s] for s in SPLITS)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return pick


def _member(labels, classes):
    """Boolean mask of labels in classes."""
    return (labels[:, None] == torch.tensor(classes)[None, :]).any(1)


def _aux_letters(data, flags):
    """`letters`: 20,000 letters rendered from fonts (attacklab.letters); their 'labels' are letter indices."""
    from attacklab.letters import load_letters
    return load_letters(Path(flags["data_dir"]) / CACHE_DIR, 20000 if not flags["dry_run"] else 200, seed=0)


@dataclass(frozen=True)
class Protocol:
    """The provider's private digits and where the attacker's images come from.

    The target's output i is the digit private_classes[i]: its labels are 0..k-1 in the order of
    the private digits; the experimenter's judges speak in the real digits (digits_of).
    """
    name: str
    private_classes: tuple
    pick_aux: Callable
    summary: str

    @property
    def n_classes(self):
        return len(self.private_classes)

    def digits_of(self, labels):
        """The real digit of each target label 0..k-1 (same device as labels)."""
        return torch.tensor(self.private_classes, device=labels.device)[labels]

    def private(self, data):
        """The provider's data: each split restricted to the private digits, labelled 0..k-1 in their order."""
        index = torch.full((N_CLASSES,), -1, dtype=torch.int64)
        index[list(self.private_classes)] = torch.arange(self.n_classes)
        out = {}
        for split in SPLITS:
            x, y = data[split]
            keep = _member(y, self.private_classes)
            out[split] = (x[keep], index[y[keep]])
        return out

    def aux(self, data, flags):
        """(attacker's images, their true labels): the labels are the experimenter's, never the attacker's."""
        return self.pick_aux(data, flags)


# The attacker's query budget when --query_budget is not given: `same` queries its 10k images once;
# `disjoint` queries its ~30k images once and may ask about G's own samples until the budget is spent.
DEFAULT_BUDGET = {"same": None, "disjoint": 40000, "letters": 30000}
# GAN epochs when --epochs_gan is not given: five minutes of GAN training or less on 2 CPU cores each.
# `same` reaches 0.95 by the evaluator in 3 (docs/results.md, "Protocol same"); it ran 7 before.
DEFAULT_EPOCHS_GAN = {"same": 3, "disjoint": 1, "letters": 2}
DISJOINT_PRIVATE = (0, 1, 2, 3, 4)
PROTOCOLS = {
    "same": Protocol("same", tuple(range(N_CLASSES)), _aux_split,
                     "private: all ten digits of the train split; attacker: the --aux_split images (same digits)"),
    "disjoint": Protocol("disjoint", DISJOINT_PRIVATE, _aux_other_digits((5, 6, 7, 8, 9)),
                         "private: digits 0-4 of the train split; attacker: every image of digits 5-9"),
    "letters": Protocol("letters", tuple(range(N_CLASSES)), _aux_letters,
                        "private: all ten digits of the train split; attacker: 20,000 letters rendered from fonts"),
}


def disjoint_protocol(private_digits):
    """`disjoint` with these private digits; the attacker holds every image of every other digit."""
    digits = tuple(sorted(private_digits))
    others = tuple(d for d in range(N_CLASSES) if d not in digits)
    return Protocol("disjoint", digits, _aux_other_digits(others),
                    f"private: digits {' '.join(map(str, digits))} of the train split; "
                    f"attacker: every image of digits {' '.join(map(str, others))}")


def private_digits_error(protocol, digits):
    """One sentence when --private_digits cannot be used, else None."""
    if digits is None or (protocol != "disjoint" and sorted(digits) == list(PROTOCOLS[protocol].private_classes)):
        return None
    if protocol != "disjoint":
        return (f"--private_digits splits the digits of --protocol disjoint; --protocol {protocol} keeps "
                "all ten private: drop --private_digits or pass --protocol disjoint")
    if any(d < 0 or d >= N_CLASSES for d in digits) or len(set(digits)) != len(digits):
        return f"--private_digits {' '.join(map(str, digits))}: give distinct digits from 0 to 9"
    if not 2 <= len(digits) <= N_CLASSES - 1:
        return (f"--private_digits {' '.join(map(str, digits))}: the provider needs at least 2 digits and the "
                "attacker at least 1, so give 2 to 9 digits")
    return None


def protocol_for(flags):
    """The run's Protocol: the named one, with --private_digits for `disjoint` (runs older than it: 0-4)."""
    digits = flags.get("private_digits")
    if flags["protocol"] != "disjoint" or digits is None or tuple(sorted(digits)) == DISJOINT_PRIVATE:
        return PROTOCOLS[flags["protocol"]]
    return disjoint_protocol(digits)
