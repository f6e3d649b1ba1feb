"""Device state: Jetson and NVIDIA tool output parsed from samples in their documented formats,
whole-device captures read from temporary trees laid out like a Jetson's and a PC's root, and
this machine's own state read for real."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from compress.agent import state as device_state

# tegrastats on a Jetson Orin (JetPack 6), made-up numbers.
ORIN_LINE = (
    "11-26-2026 09:00:00 RAM 2262/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [2%@1510,0%@1510,1%@1510,3%@1510,off,off] EMC_FREQ 12%@2133 GR3D_FREQ 47%@[624,0] "
    "cpu@48.5C soc2@46.1C soc0@46.7C gpu@47.3C tj@48.5C soc1@45.9C "
    "VDD_IN 5321mW/5102mW VDD_CPU_GPU_CV 1203mW/1150mW VDD_SOC 1603mW/1590mW"
)


def test_tegrastats_line():
    s = device_state.parse_tegrastats(ORIN_LINE)
    assert s["ram_mb"] == {"used": 2262, "total": 7620}
    assert s["cpu"][0] == {"load": 2, "mhz": 1510} and s["cpu"][4] is None and len(s["cpu"]) == 6
    assert s["emc_freq"] == {"load": 12, "mhz": 2133} and s["gr3d_freq"] == {"load": 47, "mhz": 624}
    assert s["temperatures_c"]["gpu"] == 47.3 and s["temperatures_c"]["tj"] == 48.5
    assert s["power_mw"]["VDD_IN"] == {"now": 5321, "avg": 5102} and len(s["power_mw"]) == 3


def test_mean_power_over_samples():
    lines = [ORIN_LINE, ORIN_LINE.replace("VDD_IN 5321mW", "VDD_IN 5679mW")]
    summary = device_state.mean_power([device_state.parse_tegrastats(x) for x in lines])
    assert summary == {"samples": 2, "mean_mw": {"VDD_IN": 5500.0, "VDD_CPU_GPU_CV": 1203.0, "VDD_SOC": 1603.0}}
    assert device_state.mean_power([]) is None


def test_l4t_release_and_power_mode():
    release = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19"
    assert device_state.parse_l4t_release(release) == "36.3.0"
    assert device_state.parse_l4t_release("") is None
    assert device_state.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert device_state.parse_nvpmodel("NV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    assert device_state.parse_nvpmodel("nvpmodel: command not found") is None


def test_nvidia_smi_csv():
    text = "NVIDIA H100 80GB HBM3, 560.35.03, P0, 1980, 2619, 1980, 34, 71.52, 700.00, 0, Enabled\n"
    (gpu,) = device_state.parse_nvidia_smi(text)
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["clocks.sm"] == 1980 and gpu["power.draw"] == 71.52
    assert gpu["pstate"] == "P0" and gpu["persistence_mode"] == "Enabled"
    assert device_state.parse_nvidia_smi("A, [N/A]")[0]["driver_version"] is None


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A temporary folder standing in for /: device_state reads, globs and tests paths under it,
    and the commands it runs answer from `root.commands`."""
    read, find = device_state._read, glob.glob

    def inside(path: str) -> str:
        return str(tmp_path / path.lstrip("/"))

    def outside(path: str) -> str:
        return "/" + os.path.relpath(path, tmp_path)

    fake_path = SimpleNamespace(exists=lambda p: os.path.exists(inside(p)), basename=os.path.basename,
                                realpath=lambda p: outside(os.path.realpath(inside(p))))  # fmt: skip
    monkeypatch.setattr(device_state, "_read", lambda path: read(inside(path)))
    monkeypatch.setattr(
        device_state, "glob", SimpleNamespace(glob=lambda pattern: [outside(p) for p in find(inside(pattern))])
    )
    monkeypatch.setattr(
        device_state, "os", SimpleNamespace(path=fake_path, cpu_count=os.cpu_count, getloadavg=os.getloadavg)
    )
    commands: dict[str, str] = {}
    monkeypatch.setattr(device_state, "_run", lambda argv, timeout=5.0: commands.get(argv[0]))

    def write(path: str, text: str) -> Path:
        file = Path(inside(path))
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        return file

    return SimpleNamespace(path=tmp_path, write=write, commands=commands)


def test_capture_on_a_jetson_orin(root):
    root.write(
        "/etc/nv_tegra_release", "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n"
    )
    root.write("/proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    root.write("/proc/cpuinfo", "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd aes asimddp\n")
    for cpu in range(12):  # cpu10 and cpu11 sort after cpu9, not after cpu1
        root.write(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{1000 + cpu}000\n")
    root.write("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n")
    for zone, (kind, milli) in enumerate(
        [("cpu-thermal", "48500"), ("gpu-thermal", "47312"), ("tj-thermal", "-40000")]
    ):
        root.write(f"/sys/class/thermal/thermal_zone{zone}/type", kind)
        root.write(f"/sys/class/thermal/thermal_zone{zone}/temp", milli)
    root.write("/sys/class/devfreq/15340000.vic/cur_freq", "115200000")  # not the GPU
    gpu = "/sys/devices/platform/bus@0/17000000.ga10b/devfreq/17000000.ga10b"
    for key in ("cur_freq", "min_freq", "max_freq"):
        root.write(f"{gpu}/{key}", "1300500000")
    (root.path / "sys/class/devfreq/17000000.ga10b").symlink_to(root.path / gpu.lstrip("/"))  # as sysfs links it
    root.write("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "3199000000")
    root.commands.update({"nvpmodel": "NV Power Mode: MAXN\n0", "dpkg-query": "6.0+b106"})

    state = device_state.capture("jetson")
    assert state["jetson"] == {
        "l4t": "36.3.0", "jetpack": "6.0+b106", "power_mode": {"name": "MAXN", "id": 0}, "jetson_clocks": True,
        "gpu_clock_mhz": {"cur_mhz": 1300, "min_mhz": 1300, "max_mhz": 1300}, "emc_clock_mhz": 3199,
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
    }  # fmt: skip
    assert state["cpu"]["governor"] == "schedutil" and state["cpu"]["cpu_mhz"] == list(range(1000, 1012))
    assert state["temperatures_c"] == {"cpu-thermal": 48.5, "gpu-thermal": 47.312, "tj-thermal": -40.0}
    assert device_state.read_cpuinfo()[1] == {"fp", "asimd", "aes", "asimddp"}
    assert "jetson" in device_state.capture("cpu"), "a cpu target on a Jetson still records the board"
    after = device_state.changing("cpu")
    assert after["gpu_clock_mhz"] == 1300 and after["cpu_mhz"] == list(range(1000, 1012))

    root.write(f"{gpu}/min_freq", "306000000")  # clocks no longer pinned
    assert device_state.capture("jetson")["jetson"]["jetson_clocks"] is False


def test_capture_on_a_pc_without_cpufreq(root):
    cpu = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512_vnni amx_int8\n"
    root.write(
        "/proc/cpuinfo", f"processor\t: 0\n{cpu}cpu MHz\t\t: 2000.000\n\nprocessor\t: 1\n{cpu}cpu MHz\t\t: 3800.412\n"
    )
    state = device_state.capture("cpu")
    assert state["cpu"]["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert state["cpu"]["cpu_mhz"] == [2000, 3800] and state["cpu"]["governor"] is None
    assert state["temperatures_c"] == {} and "jetson" not in state
    assert "gpu_clock_mhz" not in device_state.changing("cpu")


def test_this_machine_state_is_filled():
    """Read for real, whatever this machine is: a Jetson (which ships /etc/nv_tegra_release) gets its
    board's section, any other machine none."""
    state = device_state.capture("cpu")
    assert state["cpu"]["model"] and state["cpu"]["logical_cores"] == os.cpu_count() and state["hostname"]
    assert isinstance(state["cpu"]["load_average"], list) and isinstance(state["temperatures_c"], dict)
    if os.path.exists("/etc/nv_tegra_release"):
        assert state["jetson"]["l4t"] is not None, "the L4T release of this Jetson"
    else:
        assert "jetson" not in state
    after = device_state.changing("cpu")
    assert set(after) >= {"temperatures_c", "load_average", "cpu_mhz"}
