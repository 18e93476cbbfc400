"""The provider's prediction API: the attacker's only door to the target; it counts every image it answers."""
import torch

from attacklab.classifiers import predict_labels
from attacklab.runtime import UserError


class QueryBudgetExceeded(UserError):
    """The attacker asked for more answers than --query_budget allows."""


class PredictionAPI:
    """Answers a batch of images in [0, 1] (N, 1, 28, 28) with the target's predicted labels (N,).

    Every image counts as one query. With a budget, a batch that would go past it is refused
    whole, before the target sees any of it.
    """

    def __init__(self, target_model, budget=None):
        self._answer = lambda x: predict_labels(target_model, x)
        self.budget = budget
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


def answer_all(api, images01, batch_size=1000):
    """The API's answers for a large set of images, sent in batches (each image counted once)."""
    return torch.cat([api(images01[i:i + batch_size]) for i in range(0, len(images01), batch_size)])
