"""Device state: Jetson and NVIDIA tool output parsed from samples in their documented formats,
and this machine's own state read for real."""

from __future__ import annotations

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


def test_this_machine_state_is_filled():
    state = device_state.capture("cpu")
    assert state["cpu"]["model"] and state["cpu"]["logical_cores"] >= 1 and state["hostname"]
    assert isinstance(state["cpu"]["load_average"], list) and isinstance(state["temperatures_c"], dict)
    assert "jetson" not in state  # not a Jetson
    after = device_state.changing("cpu")
    assert set(after) >= {"temperatures_c", "load_average", "cpu_mhz"}
