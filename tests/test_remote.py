"""Remote targets over SSH, against a real OpenSSH server on loopback playing the device."""

from __future__ import annotations

import json
import textwrap

import pytest

from compress.measure.remote import remote_command, ssh_args, ssh_failure
from compress.targets import HostSpec
from tests import sshd
from tests.conftest import TINY_RECIPE, TINY_TARGET
from tests.test_cli import compress

pytestmark = pytest.mark.skipif(sshd.skip_reason() is not None, reason=sshd.skip_reason() or "")


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    dev, process = sshd.start(tmp_path_factory.mktemp("device"))
    yield dev
    process.terminate()
    process.wait(timeout=10)


def test_profile_a_bare_onnx_file_here_and_on_the_device(device, mlp, tmp_path):
    remote = tmp_path / "device.yaml"
    remote.write_text(device.target_yaml("device-ort"))
    local = tmp_path / "here.yaml"
    local.write_text(TINY_TARGET)
    before = device.runs()
    out = tmp_path / "out"
    result = compress("profile", str(mlp), "--target", str(local), "--target", str(remote), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert device.runs() == before + 1  # the device's Python ran the measuring program once
    report = json.loads((out / "report.json").read_text())
    targets = {t["name"]: t for t in report["targets"]}
    assert targets["device-ort"]["host"] == f"{device.user}@127.0.0.1:{device.port}"
    assert targets["tiny-ort"]["host"] is None
    for t in targets.values():
        state = t["state"]["state_before"]
        assert state["hostname"] and state["cpu"]["model"] and state["cpu"]["logical_cores"] >= 1
        assert "load_average" in t["state"]["state_after"] and t["versions"]["onnxruntime"]
    (variant,) = report["variants"]
    assert variant["name"] == "mlp" and variant["accuracy"] is None
    for lat in variant["latency"]:
        assert lat["iterations"] >= 10 and lat["p50_ci_low_ms"] <= lat["p50_ms"] <= lat["p50_ci_high_ms"]
    assert {(lat["target"], lat["batch_size"]) for lat in variant["latency"]} == {
        ("tiny-ort", 1), ("tiny-ort", 4), ("device-ort", 1)}  # fmt: skip
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    work = device.folder / "remote-work"
    assert [p.name for p in work.iterdir()] == ["models"]  # the job folder was removed from the device
    (stored,) = (work / "models").iterdir()  # the model, kept under its content hash
    assert stored.read_bytes() == mlp.read_bytes()

    again = compress("profile", str(mlp), "--target", str(remote), "-o", str(tmp_path / "again"))
    assert again.returncode == 0 and "1 model file(s) already there" in again.stderr
    assert device.runs() == before + 2 and len(list((work / "models").iterdir())) == 1


def test_recipe_measures_on_the_device_with_the_same_accuracy(device, write, tmp_path):
    write("tiny-ort.yaml", TINY_TARGET)
    write("device-ort.yaml", device.target_yaml("device-ort"))
    recipe = write("tiny.yaml", TINY_RECIPE.replace("targets: [tiny-ort]", "targets: [tiny-ort, device-ort]"))
    out = tmp_path / "out"
    result = compress("run", str(recipe), "-o", str(out), "--set", "stages[train].epochs=1")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    for v in report["variants"]:
        here, there = ({a["target"]: a for a in v["accuracy_per_target"]}[t] for t in ("tiny-ort", "device-ort"))
        assert there["value"] == here["value"] and there["samples"] == here["samples"]  # same file, same runtime
        assert any(lat["target"] == "device-ort" for lat in v["latency"])
    device_info = next(t for t in report["targets"] if t["name"] == "device-ort")
    assert device_info["state"]["state_before"]["cpu"]["model"] and device_info["error"] is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("closed-port", "connection refused"),
        ("wrong-key", "authentication failed"),
        ("unknown-host-key", "host key is not in known_hosts"),
        ("missing-key-file", "identity file"),
        ("no-runtime-there", "runtime openvino is not installed on"),
    ],
)
def test_a_failing_device_gives_one_line_and_keeps_other_targets(device, mlp, tmp_path, change, expected):
    empty_known_hosts = tmp_path / "empty_known_hosts"
    empty_known_hosts.write_text("")
    overrides = {
        "closed-port": {"port": sshd.free_port()},
        "wrong-key": {"identity": device.other_key},
        "unknown-host-key": {"known_hosts": empty_known_hosts},
        "missing-key-file": {"identity": tmp_path / "no-such-key"},
        "no-runtime-there": {"runtime": "openvino"},  # the test device's Python cannot import it
    }[change]
    bad = tmp_path / "bad.yaml"
    bad.write_text(device.target_yaml("bad-device", **overrides))
    local = tmp_path / "here.yaml"
    local.write_text(TINY_TARGET)
    out = tmp_path / "out"
    result = compress("profile", str(mlp), "-t", str(local), "-t", str(bad), "-o", str(out), "-q")
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "bad-device" in line and "127.0.0.1" in line and expected in line
    report = json.loads((out / "report.json").read_text())
    infos = {t["name"]: t for t in report["targets"]}
    assert expected in infos["bad-device"]["error"] and infos["tiny-ort"]["error"] is None
    assert {lat["target"] for lat in report["variants"][0]["latency"]} == {"tiny-ort"}  # the rest is intact
    assert any("bad-device" in w for w in report["warnings"])


def test_ssh_command_is_strict_and_quoted():
    host = HostSpec.model_validate("nvidia@jetson.local:2222")
    args = ssh_args(host)
    assert args[-2:] == ["--", "jetson.local"] and "StrictHostKeyChecking=yes" in args and "BatchMode=yes" in args
    assert args[args.index("-p") + 1] == "2222" and args[args.index("-l") + 1] == "nvidia"
    assert remote_command("rm", "-rf", "/tmp/a b; reboot") == "rm -rf '/tmp/a b; reboot'"


def test_unknown_ssh_failures_keep_ssh_own_last_line():
    error = ssh_failure(HostSpec(address="h"), "debug1: x\nkex_exchange_identification: read: reset\n")
    assert error.message == "h:22: kex_exchange_identification: read: reset"


def test_host_short_form_and_bad_fields_are_rejected_with_their_place(write):
    from compress.errors import RecipeError
    from compress.targets import load_target

    path = write("t.yaml", textwrap.dedent("""\
        name: t
        runtime: onnxruntime
        host: {address: x, prot: 22}
        """))  # fmt: skip
    with pytest.raises(RecipeError) as info:
        load_target(path)
    assert "host.prot" in str(info.value.problems[0]) and "t.yaml:3" in str(info.value.problems[0])


def test_a_work_folder_other_users_can_write_is_refused(device, mlp, tmp_path):
    shared = tmp_path / "shared-work"
    shared.mkdir()
    shared.chmod(0o777)
    remote = tmp_path / "device.yaml"
    remote.write_text(device.target_yaml("device-ort").replace(str(device.folder / "remote-work"), str(shared)))
    result = compress("profile", str(mlp), "--target", str(remote), "-o", str(tmp_path / "out"))
    assert result.returncode == 6
    assert f"the work folder {shared} is writable by other users (drwxrwxrwx" in " ".join(result.stderr.split())
    assert not (shared / "models").exists() or not list((shared / "models").iterdir())


def test_an_altered_stored_model_is_refused_and_sent_again(device, mlp, tmp_path):
    remote = tmp_path / "device.yaml"
    remote.write_text(device.target_yaml("device-ort"))
    assert compress("profile", str(mlp), "--target", str(remote), "-o", str(tmp_path / "a")).returncode == 0
    stored = (
        device.folder / "remote-work" / "models" / f"{__import__('compress.agent.store').agent.store.digest(mlp)}.onnx"
    )
    stored.write_bytes(stored.read_bytes() + b"tampered")
    compress("profile", str(mlp), "--target", str(remote), "-o", str(tmp_path / "b"))
    (variant,) = json.loads((tmp_path / "b" / "report.json").read_text())["variants"]
    assert "does not match what was sent" in " ".join(variant["errors"]) and not variant["latency"]
    third = compress("profile", str(mlp), "--target", str(remote), "-o", str(tmp_path / "c"))
    assert third.returncode == 0, third.stderr
    assert stored.read_bytes() == mlp.read_bytes()


def test_a_home_relative_work_folder_stays_the_login_users():
    from compress.measure.remote import shell_path

    assert shell_path("~/.cache/compress device") == "\"$HOME\"/'.cache/compress device'"
    assert shell_path("/tmp/x y") == "'/tmp/x y'"
