"""Where training runs and in which precision: the `device:` and `amp:` settings of `train`,
`finetune` and QAT, resolved and checked before any work.

`auto` picks CUDA when PyTorch sees a GPU, else the CPU. Mixed precision follows PyTorch's
automatic mixed precision (https://pytorch.org/docs/stable/amp.html): `fp16` autocast with a
GradScaler on CUDA; `bf16` autocast on CUDA or on CPUs with AVX-512 BF16 or AMX. A setting this
machine cannot honour is an error before the run starts, never a silent fall-back to fp32, so a
report's numbers always come from the precision the recipe asked for.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.distributed import local_size
from compress.errors import UsageError

if TYPE_CHECKING:
    import torch

    from compress.recipe import Recipe

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve(device: str) -> str:
    """The torch device `auto` stands for here; other settings unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_bf16_supported(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); emulated bf16 is slower
    than fp32. Read from the CPU flags where Linux lists them, else asked of oneDNN."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    if text:
        return any(re.search(rf"\b{flag}\b", text) for flag in CPU_BF16_FLAGS)
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check(stage: str, field: str, device: str, amp: str | None) -> None:
    """Refuse a device or precision this machine lacks, naming the stage and the field."""
    import torch

    where = f"stage '{stage}': {field}"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            found = f"{count} CUDA device(s) are" if count else "no CUDA device is"
            raise UsageError(f"{where}device is '{device}', but {found} available here",
                             hint="use device: auto (CUDA when present, else the CPU) or device: cpu")  # fmt: skip
    on = resolve(device)
    if on.startswith("cuda") and local_size() > torch.cuda.device_count():
        raise UsageError(f"{where}device is '{device}', but {local_size()} processes share "
                         f"{torch.cuda.device_count()} CUDA device(s) here; each needs its own",
                         hint="start one process per GPU at most (--nproc or torchrun's --nproc_per_node)")  # fmt: skip
    if amp == "fp16" and on == "cpu":
        raise UsageError(f"{where}amp is 'fp16', which needs CUDA, but the stage trains on the CPU",
                         hint="use amp: bf16 (on CPUs with AVX-512 BF16 or AMX) or amp: null for fp32")  # fmt: skip
    if amp == "bf16" and on == "cpu" and not cpu_bf16_supported():
        raise UsageError(f"{where}amp is 'bf16', but this CPU has no native bfloat16 (AVX-512 BF16 or AMX)",
                         hint="use amp: null for fp32 on this machine, or train on a GPU")  # fmt: skip
    if amp == "bf16" and on != "cpu" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{where}amp is 'bf16', but GPU {on} does not support bfloat16",
                         hint="use amp: fp16 or amp: null")  # fmt: skip


def check_recipe_devices(recipe: Recipe) -> None:
    """Check every training stage of every sweep point, before any work."""
    for _, point in recipe.points():
        for stage in point.stages:
            found = stage.training()
            if found:
                options, field = found
                check(stage.name, "".join(f"{f}." for f in field), options.device, options.amp)


def effective_amp(device: str, amp: str | None) -> str | None:
    """`amp: auto` as it applies on `device`: bf16 where it is native (a CUDA GPU that supports it, a
    CPU with AVX-512 BF16 or AMX), else fp32 (None); other values unchanged."""
    if amp != "auto":
        return amp
    import torch

    native = torch.cuda.is_bf16_supported() if device.startswith("cuda") else cpu_bf16_supported()
    return "bf16" if native else None


def autocast(device: str, amp: str | None) -> Any:
    """torch.autocast for `amp` on `device`; a no-op for fp32."""
    if amp is None:
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: str, amp: str | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16, whose small gradients would underflow; disabled (a pass-through) otherwise."""
    import torch

    return torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")


def moved(inputs: tuple, device: Any) -> tuple:
    """A batch's tensors on `device`."""
    return tuple(t.to(device, non_blocking=True) for t in inputs)


def model_device(model: Any) -> torch.device:
    """Where a module's weights are (the CPU for a module without any)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))
