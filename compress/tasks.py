"""What a task fixes: the model's input and output names, the metric, and how outputs are scored.

Stages, export and runtimes ask the task instead of assuming image classification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    metric: str  # name of the score reported for every variant
    higher_is_better: bool = True

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        """The task metric in points (percent) for a batch of model outputs."""
        if self.metric == "accuracy":
            return float((outputs.argmax(axis=1) == labels).mean() * 100.0)
        raise NotImplementedError(self.metric)


TASKS = {
    "classification": Task("classification", ("input",), ("logits",), "accuracy"),
}


def get_task(name: str) -> Task:
    return TASKS[name]
