"""The state of the device a measurement ran on: CPU governor and clocks, load, temperatures, and
for NVIDIA boards and GPUs the release, power mode, clocks and power draw.

Numbers measured on a throttled board or under a powersave governor are not comparable with
others, so this is recorded before and after every measurement. Standard library only: this module
is copied to remote devices as is (Python 3.8 and later, as on JetPack 5).
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess


def capture(device: str = "cpu") -> dict:
    """Everything known about the device now; `device` is the target's (cpu, gpu or jetson)."""
    state = {"hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
             "machine": platform.machine(), "python": platform.python_version(), "cpu": cpu_state(),
             "temperatures_c": temperatures()}  # fmt: skip
    if device == "jetson" or os.path.exists("/etc/nv_tegra_release"):
        state["jetson"] = jetson_state()
    if device == "gpu" and shutil.which("nvidia-smi"):
        state["gpu"] = nvidia_smi_state()
    return state


def changing(device: str = "cpu") -> dict:
    """The part of the state that moves during a run: taken again after measuring."""
    state = {"temperatures_c": temperatures(), "load_average": _loadavg(), "cpu_mhz": _cpu_mhz()}
    if device == "jetson" or os.path.exists("/etc/nv_tegra_release"):
        state["gpu_clock_mhz"] = _devfreq_gpu().get("cur_mhz")
    if device == "gpu" and shutil.which("nvidia-smi"):
        state["gpu"] = nvidia_smi_state()
    return state


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _run(argv: list, timeout: float = 5.0) -> str | None:
    """A command's stdout, or None when it is missing, fails or hangs (state is best effort)."""
    if not shutil.which(argv[0]):
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read_cpuinfo() -> tuple[str, set]:
    """The CPU model and feature flags /proc/cpuinfo lists (x86 'model name' and 'flags'; Arm's
    'Model' or 'Hardware' and 'Features'), falling back to what platform reports."""
    model, flags = "", set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return model or platform.processor() or platform.machine(), flags


def cpu_state() -> dict:
    return {"model": read_cpuinfo()[0], "logical_cores": os.cpu_count(),
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "cpu_mhz": _cpu_mhz(), "load_average": _loadavg()}  # fmt: skip


def _cpu_mhz() -> list:
    """Current frequency of each core (cpufreq), or /proc/cpuinfo's figure where cpufreq is absent."""
    paths = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"), key=_cpu_index)
    values = [_read(p) for p in paths]
    if values:
        return [round(int(v) / 1000) for v in values if v and v.isdigit()]
    text = _read("/proc/cpuinfo") or ""
    return [round(float(m)) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]


def _cpu_index(path: str) -> int:
    match = re.search(r"cpu(\d+)", path)
    return int(match.group(1)) if match else 0


def _loadavg() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def temperatures() -> dict:
    """Thermal zones by type, in °C."""
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        kind, value = _read(f"{zone}/type"), _read(f"{zone}/temp")
        if kind and value and value.lstrip("-").isdigit():
            out[kind] = int(value) / 1000.0
    return out


# ---------------------------------------------------------------------------- NVIDIA Jetson


def jetson_state() -> dict:
    """L4T release, JetPack, power mode, whether jetson_clocks pinned the clocks, GPU and EMC clocks."""
    gpu = _devfreq_gpu()
    return {
        "l4t": parse_l4t_release(_read("/etc/nv_tegra_release") or ""),
        "jetpack": _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]),
        "power_mode": parse_nvpmodel(_run(["nvpmodel", "-q"]) or ""),
        # jetson_clocks sets every clock's minimum to its maximum; the GPU's shows it without root.
        "jetson_clocks": gpu["min_mhz"] == gpu["max_mhz"] if gpu.get("min_mhz") else None,
        "gpu_clock_mhz": gpu,
        "emc_clock_mhz": _hz_to_mhz(_read("/sys/kernel/debug/bpmp/debug/clk/emc/rate")),
        "model": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
    }


def _devfreq_gpu() -> dict:
    """GPU clocks from devfreq (ga10b on Orin, gv11b on Xavier, gpu.0 elsewhere)."""
    for folder in sorted(glob.glob("/sys/class/devfreq/*")):
        name = os.path.basename(os.path.realpath(folder))
        if any(key in name for key in ("gpu", "ga10b", "gv11b", "gp10b")):
            return {key: _hz_to_mhz(_read(f"{folder}/{key.replace('_mhz', '_freq')}"))
                    for key in ("cur_mhz", "min_mhz", "max_mhz")}  # fmt: skip
    return {}


def _hz_to_mhz(text: str | None) -> int | None:
    return round(int(text) / 1_000_000) if text and text.isdigit() else None


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 3.0, GCID: ...' -> '36.3.0'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse_nvpmodel(text: str) -> dict | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' then the mode number."""
    match = re.search(r"NV Power Mode:\s*(\S+)(?:\s*\n\s*(\d+))?", text)
    if not match:
        return None
    return {"name": match.group(1), "id": int(match.group(2)) if match.group(2) else None}


_TEGRA_RAIL = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*) (\d+)mW/(\d+)mW")
_TEGRA_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?[\d.]+)C\b")
_TEGRA_FREQ = re.compile(r"\b(EMC_FREQ|GR3D_FREQ) (\d+)%(?:@\[?(\d+)\]?)?")


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line (JetPack 5/6 format) as numbers: RAM, CPU load and clocks, EMC and GPU
    load, temperatures and power rails (instant and average mW)."""
    out: dict = {}
    ram = re.search(r"\bRAM (\d+)/(\d+)MB", line)
    if ram:
        out["ram_mb"] = {"used": int(ram.group(1)), "total": int(ram.group(2))}
    cpus = re.search(r"\bCPU \[([^\]]*)\]", line)
    if cpus:
        cores = [re.match(r"(\d+)%@(\d+)", c.strip()) for c in cpus.group(1).split(",")]
        out["cpu"] = [{"load": int(c.group(1)), "mhz": int(c.group(2))} if c else None for c in cores]
    for name, load, mhz in _TEGRA_FREQ.findall(line):
        out[name.lower()] = {"load": int(load), "mhz": int(mhz) if mhz else None}
    out["temperatures_c"] = {name: float(value) for name, value in _TEGRA_TEMP.findall(line)}
    out["power_mw"] = {name: {"now": int(now), "avg": int(avg)} for name, now, avg in _TEGRA_RAIL.findall(line)}
    return out


class PowerSampler:
    """Runs tegrastats while a measurement runs and averages each power rail (mW)."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.process = None

    def __enter__(self) -> PowerSampler:
        if shutil.which("tegrastats"):
            self.process = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.lines = self.process.communicate(timeout=10)[0].splitlines()

    def summary(self) -> dict | None:
        return mean_power([parse_tegrastats(line) for line in getattr(self, "lines", [])])


def mean_power(samples: list) -> dict | None:
    """Mean instant power per rail over tegrastats samples."""
    rails: dict = {}
    for sample in samples:
        for name, reading in sample.get("power_mw", {}).items():
            rails.setdefault(name, []).append(reading["now"])
    if not rails:
        return None
    return {"samples": len(samples), "mean_mw": {k: round(sum(v) / len(v), 1) for k, v in rails.items()}}


# ---------------------------------------------------------------------------- NVIDIA GPUs (servers)

GPU_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "temperature.gpu",
              "power.draw", "power.limit", "utilization.gpu", "persistence_mode")  # fmt: skip


def nvidia_smi_state() -> list | None:
    text = _run(["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"])
    return parse_nvidia_smi(text) if text else None


def parse_nvidia_smi(text: str) -> list:
    """`nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits`, one dict per GPU."""
    gpus = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        gpus.append({key: _number(value) for key, value in zip(GPU_FIELDS, values)})  # noqa: B905 - Python 3.8 on devices
    return gpus


def _number(value: str):
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return None if value in ("[N/A]", "[Not Supported]", "N/A") else value
