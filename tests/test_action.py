"""The GitHub Action (action/run.sh run here as the action runs it, action.yml in step with it) and the Docker images."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_report import sample_report

SCRIPT = ROOT / "action" / "run.sh"
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def run_action(tmp_path: Path, compress: str | None = None, **inputs: str) -> subprocess.CompletedProcess:
    """Run the script with GitHub's files for outputs and the step summary, and no install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        COMPRESS=compress or f"{sys.executable} -m compress",
        INPUT_INSTALL="false",
        GITHUB_OUTPUT=str(tmp_path / "github_output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
    )
    env.update({f"INPUT_{name.upper()}": value for name, value in inputs.items()})
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def outputs(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "github_output").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def report_file(tmp_path):
    path = tmp_path / "given" / "report.json"
    path.parent.mkdir()
    sample_report().save(path)  # fp32 4 MB at 98 %, int8 and 'worse' 1 MB
    return path


def test_a_passing_gate_exits_0_with_summary_outputs_and_junit(report_file, tmp_path):
    result = run_action(tmp_path, report=str(report_file), gate_args="--max-size-mb 5 --min-accuracy 96")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "### compress gates: passed" in summary and "| gate | variant | limit | value | verdict |" in summary
    assert summary.count("| max_size_mb |") == 3
    assert outputs(tmp_path) == {"report": str(report_file), "folder": str(report_file.parent), "exit-code": "0"}
    suite = ET.parse(tmp_path / "reports" / "ci" / "gates.xml").getroot()  # the default: OUTPUT/gates.xml
    assert suite.get("tests") == "6" and suite.get("failures") == "0"


def test_a_failing_gate_exits_1_and_the_summary_says_fail(report_file, tmp_path):
    junit = tmp_path / "junit" / "g.xml"
    result = run_action(tmp_path, report=str(report_file), gate_args="--max-size-mb\n2", junit=str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "compress gates: FAILED" in summary and "| max_size_mb | fp32 | 2 MB |" in summary
    assert "**fail**" in summary.split("| max_size_mb | fp32 |")[1].splitlines()[0]
    assert outputs(tmp_path)["exit-code"] == "1"
    assert ET.parse(junit).getroot().get("failures") == "1"


def test_baseline_is_passed_to_the_regression_gates(report_file, tmp_path):
    old = sample_report()
    for v in old.variants:
        for lat in v.latency:
            lat.p50_ms *= 0.9  # the gated report is about 11 % slower
    old.save(tmp_path / "old.json")
    slow = run_action(tmp_path, report=str(report_file), baseline="old.json", gate_args="--max-latency-regression 5%")
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "max_latency_regression" in slow.stdout


@pytest.mark.parametrize(
    "inputs, message",
    [({}, "give the action a recipe (to run) or a report"),
     ({"recipe": "r.yaml", "report": "report.json"}, "not both"),
     ({"report": "report.json", "install": "yes"}, "install must be true or false")],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(inputs, message, tmp_path):
    result = run_action(tmp_path, **inputs)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert outputs(tmp_path) == {"exit-code": "2"}


def test_a_missing_report_is_bad_input_from_compress_gate(tmp_path):
    result = run_action(tmp_path, report="nope/report.json", gate_args="--max-size-mb 1")
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def fake_compress(tmp_path):
    """A stand-in `compress` that logs its arguments, writes a report on `run` and exits as told."""
    script = tmp_path / "fake-compress"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$* summary=${GITHUB_STEP_SUMMARY:-unset}" >> "$FAKE_LOG"\n'
        'if [ "$1" = run ]; then mkdir -p "$4" && echo {} > "$4/report.json"; exit "${FAKE_RUN:-0}"; fi\n'
        'exit "${FAKE_GATE:-0}"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    "run_code, gate_code, expected, gated",
    [(0, 0, 0, True), (1, 1, 1, True), (0, 1, 1, True), (6, 0, 6, True), (6, 1, 1, True), (4, 0, 4, True),
     (4, 1, 1, True), (2, 0, 0, True), (2, 2, 2, True), (3, 0, 3, False), (5, 0, 5, False)],
)  # fmt: skip
def test_a_recipe_is_run_then_gated(fake_compress, tmp_path, monkeypatch, run_code, gate_code, expected, gated):
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("FAKE_RUN", str(run_code))
    monkeypatch.setenv("FAKE_GATE", str(gate_code))
    result = run_action(tmp_path, compress=str(fake_compress), recipe="recipes/x.yaml", output="out",
                        gate_args="--variant name[ratio=0.3] --max-size-mb 5", baseline="old.json")  # fmt: skip
    assert result.returncode == expected, result.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0] == "run recipes/x.yaml --output out summary=unset"  # only the gate step writes the summary
    if gated:
        summary = tmp_path / "summary.md"
        assert log[1:] == [f"gate out/report.json --variant name[ratio=0.3] --max-size-mb 5 --baseline old.json "
                           f"--junit out/gates.xml summary={summary}"]  # fmt: skip
        assert outputs(tmp_path) == {"report": "out/report.json", "folder": "out", "exit-code": str(expected)}
    else:
        assert len(log) == 1 and outputs(tmp_path) == {"exit-code": str(expected)}


@pytest.mark.parametrize(
    "version, extras, requirement",
    [("", "openvino", f"{ROOT}[openvino]"), ("0.2.0", "openvino", "compress-edge[openvino]==0.2.0"),
     (">=0.2,<0.3", "", "compress-edge>=0.2,<0.3"), ("", "openvino,text", f"{ROOT}[openvino,text]")],
)  # fmt: skip
def test_install_asks_pip_for_compress_edge(fake_compress, tmp_path, monkeypatch, version, extras, requirement):
    pip = tmp_path / "fake-python"
    pip.write_text('#!/usr/bin/env bash\necho "$*" > "$FAKE_PIP"\n')
    pip.chmod(0o755)
    monkeypatch.setenv("FAKE_PIP", str(tmp_path / "pip"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("PYTHON", str(pip))
    result = run_action(tmp_path, compress=str(fake_compress), report="r.json", install="true", version=version,
                        extras=extras)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert shlex.split((tmp_path / "pip").read_text())[-1] == requirement
    assert shlex.split((tmp_path / "pip").read_text())[:2] == ["-m", "pip"]


def test_install_failure_and_a_missing_command_exit_3(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON", "false")
    failed = run_action(tmp_path, report="r.json", install="true")
    assert failed.returncode == 3 and "pip could not install" in failed.stderr
    missing = run_action(tmp_path, compress="no-such-compress-command", report="r.json")
    assert missing.returncode == 3 and "no-such-compress-command not found" in missing.stderr


def step_text(step: dict) -> str:
    return yaml.safe_dump(step)


def test_action_yml_declares_every_input_its_steps_use_and_runs_the_script():
    declared = set(ACTION["inputs"])
    steps = ACTION["runs"]["steps"]
    assert ACTION["runs"]["using"] == "composite"
    used = set(re.findall(r"inputs\.([A-Za-z0-9_-]+)", "".join(map(step_text, steps))))
    assert used <= declared, f"undeclared inputs: {sorted(used - declared)}"
    assert declared <= used, f"inputs no step uses: {sorted(declared - used)}"
    (script_step,) = [s for s in steps if "action/run.sh" in s.get("run", "")]
    assert script_step["run"] == 'bash "${{ github.action_path }}/action/run.sh"' and script_step["shell"] == "bash"
    # Every INPUT_* variable the script reads comes from the input of the same name, and no other is passed.
    read = set(re.findall(r"\$\{(INPUT_[A-Z_]+)", SCRIPT.read_text()))
    env = script_step["env"]
    assert set(env) == read
    for name, value in env.items():
        expression = "inputs." + name.removeprefix("INPUT_").lower().replace("_", "-")
        assert value == "${{ " + expression + " }}"
    for name, output in ACTION["outputs"].items():
        assert output["value"] == "${{ steps." + script_step["id"] + ".outputs." + name + " }}"
        assert f'echo "{name}=' in SCRIPT.read_text()


def test_action_defaults_match_the_script():
    text = SCRIPT.read_text()
    inputs = ACTION["inputs"]
    assert inputs["output"]["default"] == "reports/ci" and "output=${INPUT_OUTPUT:-reports/ci}" in text
    assert inputs["extras"]["default"] == "openvino" and "extras=${INPUT_EXTRAS-openvino}" in text
    assert inputs["install"]["default"] == "true" and "install=${INPUT_INSTALL:-true}" in text
    assert not any(i.get("required") for i in inputs.values())  # recipe or report: the script checks


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_cpu_dockerfile_builds_from_what_the_package_needs():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    steps = dockerfile_instructions(ROOT / "Dockerfile")
    assert steps[0] == ("FROM", "python:3.11-slim")
    entrypoint = [args for op, args in steps if op == "ENTRYPOINT"]
    assert entrypoint == ['["compress"]'] and "compress" in project["project"]["scripts"]
    copied = {src for op, args in steps if op == "COPY" for src in args.split()[:-1]}
    needed = {"pyproject.toml", project["project"]["readme"], "compress",
              *project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]}  # fmt: skip
    assert needed <= copied, f"the image build lacks {sorted(needed - copied)}"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not copied & ignored and {".venv", ".git", "reports/*"} <= ignored
    installs = " ".join(args for op, args in steps if op == "RUN" and "pip install" in args)
    extras = re.findall(r'"\.\[([a-z,]+)\]"', installs)
    assert extras == ["openvino"] and set(extras[0].split(",")) <= set(project["project"]["optional-dependencies"])
    assert "--index-url https://download.pytorch.org/whl/cpu" in installs


def test_jetson_dockerfile_serves_ssh_with_what_the_device_needs():
    steps = dockerfile_instructions(ROOT / "docker" / "jetson.Dockerfile")
    assert steps[0] == ("FROM", "nvcr.io/nvidia/l4t-jetpack:r36.4.0")
    installs = " ".join(args for op, args in steps if op == "RUN")
    assert "python3-numpy" in installs and "openssh-server" in installs and "authorized_keys" in installs
    assert "pip install" not in installs  # the device measures: no torch, no compress
    assert ("EXPOSE", "22") in steps and steps[-1] == ("CMD", '["/usr/sbin/sshd", "-D", "-e"]')
