"""Epoch checkpoints, so an interrupted long training resumes mid-stage instead of starting over.

After every epoch `fit` writes everything the rest of the training depends on: the weights (and
any extra trained parameters, such as distillation projections), the optimizer, the schedule, the
loss scaler, the torch and numpy random states, the epoch, the best weights so far and the history.
The file is written aside and renamed, so it is always complete. The pipeline gives each stage run
its own folder, `cache/<stage>-<key>.resume/`, named by the same key as its result; a changed
configuration therefore never resumes from another's checkpoint, and the folder is deleted once
the stage's result is in place. Resuming restores the state bit for bit, so the final weights equal
an uninterrupted run's on the same machine and device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FILE = "epoch.pt"


def state(epoch: int, model: nn.Module, extra: list[nn.Parameter], optimizer, schedule, scaler,
          rng: np.random.Generator, best: tuple[float, dict | None], history: list[dict]) -> dict[str, Any]:  # fmt: skip
    """Everything the epochs after `epoch` depend on, on the CPU."""
    return {
        "epoch": epoch,
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        "extra": [p.detach().cpu() for p in extra],
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy_rng": rng.bit_generator.state,
        "best_acc": best[0],
        "best_state": best[1],
        "history": history,
    }


def restore(saved: dict[str, Any], model: nn.Module, extra: list[nn.Parameter], optimizer, schedule, scaler,
            rng: np.random.Generator) -> None:  # fmt: skip
    """Put the training back where `saved` left it (the weights move to the model's device)."""
    model.load_state_dict(saved["model"])
    with torch.no_grad():
        for param, value in zip(extra, saved["extra"], strict=True):
            param.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    rng.bit_generator.state = saved["numpy_rng"]


def save(folder: Path, saved: dict[str, Any]) -> None:
    """Write the checkpoint aside, then rename it over the last one."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{FILE}.{os.getpid()}.tmp"
    torch.save(saved, tmp)
    os.replace(tmp, folder / FILE)


def load(folder: Path | None) -> dict[str, Any] | None:
    """The last checkpoint in `folder`, or None when there is none (or it cannot be read)."""
    path = folder / FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
        return None
