"""The provider's prediction API: the attacker's only door to the target; it counts every image it answers."""
import torch
import torch.nn.functional as F

from attacklab.classifiers import predict_labels, predict_logits
from attacklab.runtime import UserError

API_OUTPUTS = ("label", "probs", "rounded")


class QueryBudgetExceeded(UserError):
    """The attacker asked for more answers than --query_budget allows."""


def answer_format(output, decimals=1):
    """A function logits -> what the API returns: the label (N,), the softmax (N, k), or the softmax rounded."""
    if output == "label":
        return None
    if output == "probs":
        return lambda logits: F.softmax(logits, 1)
    return lambda logits: torch.round(F.softmax(logits, 1), decimals=decimals)


class PredictionAPI:
    """Answers a batch of images in [0, 1] (N, 1, 28, 28) with the target's predicted labels (N,),
    or (--api_output probs / rounded) its softmax vectors (N, k), rounded to `decimals` for 'rounded'.

    Every image counts as one query. With a budget, a batch that would go past it is refused
    whole, before the target sees any of it.
    """

    def __init__(self, target_model, budget=None, output="label", decimals=1):
        fmt = answer_format(output, decimals)
        if fmt is None:
            self._answer = lambda x: predict_labels(target_model, x)
        else:
            self._answer = lambda x: fmt(predict_logits(target_model, x))
        self.budget, self.output = budget, output
        self._queries = 0

    @property
    def queries(self):
        """Images answered so far."""
        return self._queries

    @property
    def remaining(self):
        """Images the budget still allows (None: unlimited)."""
        return None if self.budget is None else self.budget - self._queries

    def __call__(self, images01):
        n = len(images01)
        if self.budget is not None and self._queries + n > self.budget:
            raise QueryBudgetExceeded(f"the attack asked for {self._queries + n} answers but --query_budget is "
                                      f"{self.budget}; raise --query_budget or ask for fewer")
        self._queries += n
        return self._answer(images01).to(images01.device)

    def state_dict(self):
        """The count, for a checkpoint: a resumed attack continues it."""
        return {"queries": self._queries}

    def load_state_dict(self, state):
        self._queries = int(state["queries"])


def as_labels(answers):
    """The class an answer names: the label itself, or the argmax of a probability vector."""
    return answers.argmax(1) if answers.dim() == 2 else answers
