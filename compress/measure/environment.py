"""Record the machine and software a measurement was made on, so every number can be traced."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from compress.agent.state import read_cpuinfo

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp")  # fmt: skip
PACKAGES = ("compress", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "openvino", "nncf", "numpy")


def cpu_info() -> dict:
    """CPU model and the ISA flags that decide which INT8/BF16 kernels a runtime can use."""
    model, flags = read_cpuinfo()
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "logical_cores": os.cpu_count()}


# Distributions installed under another name: compress itself is `compress-edge` on PyPI (`compress` there is an
# unrelated project), so its version is looked up under that name and recorded as "compress".
DISTRIBUTION_NAMES = {"compress": "compress-edge"}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(DISTRIBUTION_NAMES.get(name, name))
        except metadata.PackageNotFoundError:
            continue
    return out


def module_versions(modules: list[str]) -> dict[str, str]:
    """Versions of the distributions that provide these importable packages (sklearn -> scikit-learn)."""
    dists = metadata.packages_distributions()
    return package_versions(tuple(sorted({d for m in modules for d in dists.get(m.split(".")[0], [m])})))


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far, in MB: Linux's VmHWM, else ru_maxrss; empty where
    the platform says neither (Windows). Children are left out: a forked child's figure starts from
    its parent's, so it says nothing of its own."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_rss_mb": round(int(line.split()[1]) / 1024, 1)}
    try:
        import resource
    except ImportError:
        return {}
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20, 1)}


def capture() -> dict:
    return {
        "cpu": cpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "hostname": platform.node(),
    }
