"""Measure on a remote device over SSH.

OpenSSH's own `ssh` client does the work, so a user's ~/.ssh/config (aliases, ProxyJump, agents)
applies. One connection ships the measuring program (a few numpy-only modules of compress) with the
job folder, one runs it with the device's Python, one brings result.json and the outputs back, and
one removes the job folder there. Host keys are always verified; every remote word is quoted.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
import uuid
from pathlib import Path

from compress.agent import job
from compress.errors import TargetError
from compress.targets import HostSpec, TargetSpec

PACKAGE = job.PACKAGE  # the compress package: shipped_files() are relative to it
# Model files live in host.workdir/models, named by content hash, and stay there between runs; a
# job (host.workdir/<id>/job) refers to them from its own folder.
MODEL_STORE = "../../models"


def ssh_args(host: HostSpec) -> list[str]:
    """The ssh command line up to the remote command: batch mode (never prompt), strict host keys."""
    args = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={host.connect_timeout_s}", "-o", "ServerAliveInterval=15", "-p", str(host.port)]  # fmt: skip
    if host.known_hosts:
        args += ["-o", f"UserKnownHostsFile={Path(host.known_hosts).expanduser()}"]
    if host.identity_file:
        args += ["-i", str(Path(host.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
    if host.user:
        args += ["-l", host.user]
    return [*args, "--", host.address]


def remote_command(*words: str) -> str:
    """One shell command line with every word quoted (paths with spaces or `$` arrive unchanged)."""
    return shlex.join(words)


def run(host: HostSpec, command: str, stdin: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run `command` on the host; connection and authentication failures become one-line errors."""
    check_identity(host)
    try:
        done = subprocess.run([*ssh_args(host), command], input=stdin, capture_output=True, check=False,
                              timeout=timeout or host.timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise TargetError(f"{host.label}: the device did not finish within {timeout or host.timeout_s} s",
                          hint="raise host.timeout_s in the target, or measure fewer variants") from None  # fmt: skip
    except FileNotFoundError:
        raise TargetError("the ssh command is not installed here", hint="install OpenSSH's client") from None
    if done.returncode == 255:  # ssh's own failure, as opposed to the remote command's
        raise ssh_failure(host, done.stderr.decode(errors="replace"))
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {done.returncode}"]
        raise TargetError(f"{host.label}: the device's command failed: {lines[-1]}")
    return done.stdout


def check_identity(host: HostSpec) -> None:
    if host.identity_file and not Path(host.identity_file).expanduser().is_file():
        raise TargetError(f"{host.label}: identity file {host.identity_file} not found",
                          hint="fix host.identity_file in the target")  # fmt: skip


SSH_FAILURES = (  # (what ssh says, what it means, what to check)
    ("Host key verification failed", "the host key is not in known_hosts or has changed",
     "check the device's key fingerprint, then add it: ssh-keyscan -p PORT ADDRESS >> KNOWN_HOSTS"),
    ("Permission denied", "authentication failed", "check host.user and host.identity_file, and that the "
     "public key is in the device's ~/.ssh/authorized_keys"),
    ("Connection refused", "connection refused", "is sshd running on the device, and is host.port right?"),
    ("timed out", "connection timed out", "is the device on and reachable from here (network, VPN, firewall)?"),
    ("Could not resolve hostname", "unknown host name", "check host.address (or its entry in ~/.ssh/config)"),
    ("No route to host", "no route to host", "is the device on this network?"),
    ("Connection closed", "the device closed the connection", "check the device's sshd log"),
    ("invalid format", "the identity file is not a private key", "point host.identity_file at the private key"),
)  # fmt: skip


def ssh_failure(host: HostSpec, stderr: str) -> TargetError:
    """ssh's stderr as one line naming the host, what failed and what to check."""
    for needle, meaning, check in SSH_FAILURES:
        if needle.lower() in stderr.lower():
            return TargetError(f"{host.label}: {meaning}", hint=check.replace("PORT", str(host.port))
                               .replace("ADDRESS", host.address).replace("KNOWN_HOSTS", host.known_hosts or "~/.ssh/known_hosts"))  # fmt: skip
    last = (stderr.strip().splitlines() or ["ssh failed"])[-1]
    return TargetError(f"{host.label}: {last}", hint="run the same ssh command by hand to see more")


def bundle(folder: Path, job_id: str, stored: set[str]) -> bytes:
    """A gzipped tar, unpacked in host.workdir: the measuring program (<id>/lib/compress/...), the job
    (<id>/job/...) and the model files the device's store lacks (models/...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in job.shipped_files():
            tar.add(PACKAGE / name, arcname=f"{job_id}/lib/compress/{name}")
        for path in sorted(folder.iterdir()):
            if path.name != "models":
                tar.add(path, arcname=f"{job_id}/job/{path.name}")
        for path in sorted((folder / "models").glob("*")):
            if path.name not in stored:
                tar.add(path, arcname=f"models/{path.name}")
    return buffer.getvalue()


def unpack_results(data: bytes, folder: Path) -> None:
    """Extract result.json and outputs/*.npy, refusing anything that would land outside `folder`."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or ".." in parts or Path(member.name).is_absolute():
                continue
            if parts[0] not in ("result.json", "outputs"):
                continue
            target = folder / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())


def run_job(target: TargetSpec, folder: Path, log) -> dict:
    """Ship the job to the target's host, measure there, and bring the result back into `folder`."""
    host = target.host
    workdir, job_id = host.workdir.rstrip("/") or "/", uuid.uuid4().hex[:12]
    where = f"{workdir}/{job_id}"
    listing = run(host, f"mkdir -p {shlex.quote(workdir)}/models && ls {shlex.quote(workdir)}/models")
    stored = set(listing.decode(errors="replace").split())
    log(f"{target.name}: copying the job to {host.label}:{where} ({len(stored)} model file(s) already there)")
    run(host, f"tar -xzf - -C {shlex.quote(workdir)}", stdin=bundle(folder, job_id, stored))
    try:
        log(f"{target.name}: measuring on {host.label} with {host.python}")
        program = f"cd {shlex.quote(where)} && PYTHONPATH=lib " + remote_command(
            host.python, "-m", "compress.agent", "job"
        )
        run(host, program)
        unpack_results(
            run(host, f"cd {shlex.quote(where)}/job && tar -czf - result.json $(ls -d outputs 2>/dev/null)"), folder
        )
    finally:
        try:
            run(host, remote_command("rm", "-rf", where), timeout=60)
        except TargetError as exc:
            log(f"warning: could not remove {where} on {host.label}: {exc.message}")
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))
