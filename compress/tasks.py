"""What a task fixes: model inputs and outputs, how a batch is fed to PyTorch and to a runtime,
the training loss, the distillation loss and the metric.

Stages, export and runtimes ask the task instead of assuming image classification. A task is
registered by its `data.task:` name in compress.registry (or a `compress.tasks` entry point). Examples are
stored as one array per split: images (N, C, H, W) float32, or token ids and attention masks
stacked as (N, 2, L) int64 for text.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Task:
    name: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]
    metric: ClassVar[str]  # reported with every variant, in points (percent)
    labels_from_model: ClassVar[bool] = False  # labels are the source model's own outputs
    logit_distillation: ClassVar[bool] = True  # distillation can match the teacher's outputs
    requires: ClassVar[dict[str, str]] = {}  # import name -> what to pip install
    augmentable: ClassVar[bool] = False  # inputs are images whose labels survive shifts, crops and flips

    def inputs(self, x: np.ndarray) -> tuple:
        """A batch as the PyTorch model's positional arguments."""
        import torch

        return (torch.from_numpy(np.ascontiguousarray(x)),)

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A batch as a runtime's named inputs."""
        return {self.input_names[0]: np.ascontiguousarray(x)}

    def trim(self, x: np.ndarray) -> np.ndarray:
        """A batch for training and PyTorch evaluation, without input that no example in it uses."""
        return x

    def lengths(self, x: np.ndarray) -> np.ndarray | None:
        """Each example's length where examples vary in length (text), else None."""
        return None

    def predict(self, model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """A PyTorch module's outputs on `x`, in order, computed on the device the module is on. Text
        goes through in length order, so each trimmed batch holds little padding."""
        import torch

        from compress.stages.device import model_device, moved

        device = model_device(model)
        lengths = self.lengths(x)
        order = np.arange(len(x)) if lengths is None else np.argsort(lengths, kind="stable")
        with torch.no_grad():
            parts = [model(*moved(self.inputs(self.trim(x[order[i : i + batch_size]])), device)).float().cpu().numpy()
                     for i in range(0, len(x), batch_size)]  # fmt: skip
        out = np.empty_like(np.concatenate(parts))
        out[order] = np.concatenate(parts)
        return out

    def dynamic_axes(self, dynamic_batch: bool) -> dict[str, dict[int, str]]:
        return {n: {0: "batch"} for n in self.input_names + self.output_names} if dynamic_batch else {}

    def for_text(self) -> Task:
        """The same task on token ids and masks (text data sources)."""
        raise NotImplementedError(f"task '{self.name}' does not take text")

    def model_problem(self, model) -> str | None:
        """Why `model` cannot serve this task, if it cannot."""
        if getattr(model, "is_detector", False):
            return f"it is a detector; task '{self.name}' needs a model with {', '.join(self.output_names)} outputs"
        return None

    def train_outputs(self, model, inputs: tuple, labels):
        """What `loss` takes in training: the model's outputs (a detector returns its own losses)."""
        return model(*inputs).float()

    def loss(self, outputs, labels, smoothing: float = 0.0):
        raise NotImplementedError

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        raise NotImplementedError

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
        """(the metric, further figures reported beside it such as mAP at one IoU), in points, from
        one evaluation."""
        return self.score(outputs, labels), {}

    def parity(self, expected: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[bool, float, str]:
        """(exported outputs agree with PyTorch's, max |diff|, what was compared) for the export check."""
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        return bool(np.allclose(got, expected, atol=atol, rtol=rtol)), diff, f"{len(expected)} test inputs"


class Classification(Task):
    name, metric = "classification", "accuracy"
    augmentable = True
    input_names, output_names = ("input",), ("logits",)

    def loss(self, outputs, labels, smoothing: float = 0.0):
        import torch.nn.functional as F

        return F.cross_entropy(outputs, labels, label_smoothing=smoothing)

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        """KL divergence of softened distributions, scaled by T^2 (Hinton et al., 2015)."""
        import torch.nn.functional as F

        t = temperature
        kl = F.kl_div(F.log_softmax(outputs / t, 1), F.softmax(teacher_outputs / t, 1), reduction="batchmean")
        return kl * t * t

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return float((outputs.argmax(axis=1) == labels).mean() * 100.0)

    def for_text(self) -> Task:
        return TextClassification()


class TextInputs:
    """Token ids and attention masks stacked as (N, 2, L) int64, fed as two named inputs."""

    input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    augmentable: ClassVar[bool] = False

    def inputs(self, x: np.ndarray) -> tuple:
        import torch

        return torch.from_numpy(np.ascontiguousarray(x[:, 0])), torch.from_numpy(np.ascontiguousarray(x[:, 1]))

    def trim(self, x: np.ndarray) -> np.ndarray:
        """Cut the padding columns past the batch's longest example: mean pooling and the attention
        mask already ignore them, and most sentences are far shorter than max_length (exported
        models and latency keep the full length)."""
        used = np.flatnonzero(x[:, 1].any(axis=0))
        return x[:, :, : used[-1] + 1] if len(used) else x

    def lengths(self, x: np.ndarray) -> np.ndarray | None:
        return x[:, 1].sum(axis=1)

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": np.ascontiguousarray(x[:, 0]), "attention_mask": np.ascontiguousarray(x[:, 1])}

    def dynamic_axes(self, dynamic_batch: bool) -> dict[str, dict[int, str]]:
        axes = {n: {0: "batch", 1: "sequence"} for n in self.input_names}
        axes.update({n: {0: "batch"} for n in self.output_names})
        return axes if dynamic_batch else {n: {1: "sequence"} for n in self.input_names}


class TextClassification(TextInputs, Classification):
    """Classification of sentences (labelled text files) by an encoder with a classification head."""

    name = "text-classification"


class Embedding(TextInputs, Task):
    """Sentence embeddings. Labels are the source model's embeddings, so the metric is fidelity:
    100 x the mean cosine similarity to the original fp32 model on held-out sentences."""

    name, metric = "embedding", "cosine"
    output_names = ("embedding",)
    labels_from_model = True

    def loss(self, outputs, labels, smoothing: float = 0.0):
        import torch.nn.functional as F

        return (1 - F.cosine_similarity(outputs, labels, dim=-1)).mean()

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        return self.loss(outputs, teacher_outputs)

    def for_text(self) -> Task:
        return self

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        a = outputs / np.linalg.norm(outputs, axis=1, keepdims=True).clip(1e-12)
        b = labels / np.linalg.norm(labels, axis=1, keepdims=True).clip(1e-12)
        return float((a * b).sum(axis=1).mean() * 100.0)


def get_task(name: str, text: bool = False) -> Task:
    """The task a recipe's `data.task` names, on token ids and masks when the data is text."""
    from compress import registry

    task = registry.resolve("tasks", name)()
    return task.for_text() if text else task
