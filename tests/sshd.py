"""A real OpenSSH server on loopback, playing a remote device: its own host key, client key,
known_hosts, config and port. Tests skip (with the reason) where sshd is not installed."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Device:
    port: int
    user: str
    identity: Path
    known_hosts: Path
    python: Path  # the device's interpreter: a wrapper that records each run, then runs this Python
    runs_log: Path
    folder: Path
    other_key: Path  # a valid key the device does not accept

    def target_yaml(self, name: str, **extra: object) -> str:
        lines = [f"name: {name}", f"runtime: {extra.pop('runtime', 'onnxruntime')}", "threads: 1", "batch_sizes: [1]",
                 "protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.05, max_seconds: 5, rounds: 2}",
                 "host:", "  address: 127.0.0.1", f"  port: {extra.pop('port', self.port)}", f"  user: {self.user}",
                 f"  identity_file: {extra.pop('identity', self.identity)}",
                 f"  known_hosts: {extra.pop('known_hosts', self.known_hosts)}", f"  python: {self.python}",
                 f"  workdir: {self.folder / 'remote-work'}", "  connect_timeout_s: 5"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def runs(self) -> int:
        return len(self.runs_log.read_text().splitlines()) if self.runs_log.exists() else 0


# The device's Python: this interpreter, but with the packages a device does not have made
# unimportable, so the tests show the measuring program needs only numpy and the runtime.
BARE_DEVICE = """\
import runpy, sys
for name in ("torch", "pydantic", "yaml", "typer", "rich", "sklearn", "onnx", "openvino", "matplotlib"):
    sys.modules[name] = None
assert sys.argv[1] == "-m", sys.argv
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def skip_reason() -> str | None:
    if not Path(SSHD).exists() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "OpenSSH server not installed (Debian: apt-get install openssh-server; `make test` does this)"
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        try:
            Path("/run/sshd").mkdir(mode=0o755)
        except OSError as exc:
            return f"cannot create sshd's privilege separation folder /run/sshd: {exc}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def start(folder: Path) -> tuple[Device, subprocess.Popen]:
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key, other_key = (keygen(folder / n) for n in ("host_key", "client_key", "other_key"))
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR",
    ]) + "\n")  # fmt: skip
    host_pub = Path(f"{host_key}.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    runs_log = folder / "device-runs.log"
    launcher = folder / "bare_device.py"
    launcher.write_text(BARE_DEVICE)
    wrapper = folder / "device-python"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {runs_log}\nexec {sys.executable} {launcher} "$@"\n')
    wrapper.chmod(0o755)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {process.stderr.read().decode()}") from None
            time.sleep(0.05)
    device = Device(port, getpass.getuser(), client_key, folder / "known_hosts", wrapper, runs_log, folder, other_key)
    return device, process
