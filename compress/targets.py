"""Hardware targets: where a variant is measured, with which runtime, threads and batch sizes.

Shipped targets live in the repository's `targets/` folder (and inside the wheel); a recipe names
them, points at its own YAML file, or writes one inline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from compress import registry
from compress.config import Strict
from compress.errors import Problem, UsageError
from compress.names import NAME_PATTERN
from compress.runtimes.onnxruntime import GPU_PROVIDERS, PROVIDERS
from compress.yamlconfig import read_yaml, suggest, validate


class LatencyProtocol(Strict):
    """How latency is measured: warm-up, then at least `min_iterations` and `min_seconds`."""

    warmup: int = Field(10, ge=0, le=10_000, description="untimed runs before measuring")
    min_iterations: int = Field(100, ge=5, le=1_000_000)
    min_seconds: float = Field(2.0, ge=0, le=3600)
    max_seconds: float = Field(60.0, gt=0, le=36_000, description="cap per variant and batch")
    rounds: int = Field(5, ge=1, le=100, description="interleaved rounds across variants")
    ci_target: float = Field(
        0.02, ge=0, le=1, description="measure on until the 95% interval of p50 is within ±this fraction (0: off)"
    )

    @model_validator(mode="after")
    def _cap_above_floor(self) -> LatencyProtocol:
        if self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds must be at least min_seconds")
        return self


class HostSpec(Strict):
    """A remote device reached over SSH (OpenSSH's `ssh`, so ~/.ssh/config applies too)."""

    address: str = Field(min_length=1, description="host name or IP address (or an alias from ~/.ssh/config)")
    name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="the board's name in a fleet's report "
        "[default: the address, with the port when two boards share an address]",
    )
    user: str | None = Field(None, description="login user [default: ssh's choice]")
    port: int = Field(22, ge=1, le=65535)
    identity_file: str | None = Field(None, description="private key file [default: ssh's choice]")
    known_hosts: str | None = Field(None, description="known_hosts file [default: ~/.ssh/known_hosts]")
    python: str = Field("python3", description="the device's Python (a full path is safest)")
    workdir: str = Field(
        "~/.cache/compress-device",
        description="folder on the device for models and results, "
        "owned by the login user and writable by nobody else (checked before each use)",
    )
    connect_timeout_s: int = Field(10, ge=1, le=600)
    timeout_s: int = Field(3600, ge=1, le=86_400, description="longest a measurement on the device may take")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        """`host: user@address:port` as a short form."""
        if isinstance(value, str):
            user, _, rest = value.rpartition("@")
            address, _, port = rest.partition(":")
            return {"address": address, **({"user": user} if user else {}), **({"port": port} if port else {})}
        return value

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.address}:{self.port}"

    @property
    def device(self) -> str:
        """Which machine this is, whoever logs in: two targets on one device take turns."""
        return f"{self.address}:{self.port}"


class TensorRTOptions(Strict):
    """How TensorRT engines are built and run; the precision comes from the target's `precision`."""

    mode: Literal["auto", "python", "trtexec"] = Field(
        "auto", description="the tensorrt Python API, trtexec, or whichever is found (Python first)"
    )
    trtexec: str = Field("trtexec", description="trtexec command or path (JetPack: /usr/src/tensorrt/bin/trtexec)")
    workspace_mb: int = Field(1024, ge=16, le=1_048_576, description="builder workspace memory pool")
    engine_cache: str | None = Field(None, description="engine folder [default: ~/.cache/compress/engines]")
    extra_build_args: list[str] = Field(default_factory=list, description="more trtexec build flags, as given")


class TargetSpec(Strict):
    """One hardware target: a runtime on a device, with fixed threads and batch sizes."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    runtime: Literal[tuple(registry.names("runtimes"))] = Field(description="a registered runtime")  # type: ignore[valid-type]
    device: Literal["cpu", "gpu", "jetson", "npu"] = Field(
        "cpu", description="jetson: also record the board's state; npu: an Intel NPU (OpenVINO)"
    )
    execution_provider: Literal[tuple(PROVIDERS)] | None = Field(  # type: ignore[valid-type]
        None, description="ONNX Runtime execution provider [default: cpu]", validate_default=True
    )
    host: HostSpec | None = Field(None, description="measure on this device over SSH instead of here")
    hosts: list[HostSpec] | None = Field(
        None, min_length=1, description="identical boards over SSH, measured in parallel (see `fleet`)"
    )
    fleet: Literal["spread", "merged", "apart"] = Field(
        "spread",
        description="with hosts: spread (each variant measured once, on whichever board is free), merged "
        "(every board measures every variant; one distribution per variant across boards) or apart "
        "(every board measures every variant; one target per board, named TARGET.BOARD)",
    )
    threads: int = Field(1, ge=1, le=1024, description="intra-op threads used for latency")
    streams: int = Field(1, ge=1, le=256, description="OpenVINO inference streams")
    performance_hint: Literal["latency", "throughput"] = Field("latency", description="OpenVINO performance hint")
    precision: Literal["fp32", "bf16", "fp16", "int8", "best"] = Field(
        "fp32",
        description="precision of floating-point layers; OpenVINO would pick bf16 on AVX-512 BF16 CPUs; "
        "TensorRT also takes int8 (QDQ models) and best",
    )
    shapes: Literal["static", "dynamic"] | None = Field(
        None,
        description="OpenVINO: compile the model for each input shape it runs at (static, as a deployment at "
        "known shapes does; faster kernels) or once for any shape (dynamic) [default: static]",
    )
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    protocol: LatencyProtocol = Field(default_factory=LatencyProtocol)
    eval_batch_size: int = Field(64, ge=1, le=65_536, description="batch for accuracy runs")
    tensorrt: TensorRTOptions | None = Field(None, description="TensorRT engine options (runtime: tensorrt)")
    power: bool = Field(False, description="sample power rails with tegrastats while timing (Jetson)")

    @field_validator("execution_provider")
    @classmethod
    def _provider_fits(cls, provider: str | None, info: ValidationInfo) -> str | None:
        """Only ONNX Runtime has providers; its GPU ones and `device: gpu` go together (checked here
        rather than when measuring, where ONNX Runtime would quietly run on the CPU)."""
        runtime, device = info.data.get("runtime"), info.data.get("device")
        if runtime is None or device is None:
            return provider  # already refused
        if runtime != "onnxruntime":
            if provider is not None:
                raise ValueError(f"execution_provider only applies to runtime onnxruntime, not {runtime}")
        elif device == "gpu" and provider not in GPU_PROVIDERS:
            raise ValueError(f"device gpu with runtime onnxruntime needs execution_provider: {' or '.join(GPU_PROVIDERS)} "
                             "(or set device: cpu)")  # fmt: skip
        elif provider in GPU_PROVIDERS and device not in ("gpu", "jetson"):
            raise ValueError(f"execution_provider {provider} runs on a GPU: set device: gpu (or jetson)")
        return provider

    @field_validator("shapes")
    @classmethod
    def _shapes_fit(cls, shapes: str | None, info: ValidationInfo) -> str | None:
        """Only runtimes that compile for input shapes take `shapes`."""
        from compress.runtimes import runtime_class

        runtime = info.data.get("runtime")
        if shapes is None or runtime is None or shapes in runtime_class(runtime).shape_modes:
            return shapes
        takers = [n for n in registry.names("runtimes") if shapes in runtime_class(n).shape_modes]
        raise ValueError(f"shapes applies to runtime {' or '.join(takers)}, not {runtime}")

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        """What the runtime declares: the devices it runs on, the precisions it takes, its options."""
        from compress.runtimes import runtime_class

        if any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes must all be at least 1")
        self._check_fleet()
        runtime = runtime_class(self.runtime)
        if self.device not in runtime.devices:
            raise ValueError(f"runtime {self.runtime} runs on device {' or '.join(runtime.devices)}, not {self.device}")
        for section in RUNTIME_OPTIONS:
            if getattr(self, section) is not None and runtime.options != section:
                raise ValueError(f"'{section}' options only apply to runtime {section}, not {self.runtime}")
        if runtime.options in RUNTIME_OPTIONS and getattr(self, runtime.options) is None:
            setattr(self, runtime.options, RUNTIME_OPTIONS[runtime.options]())
        if self.precision not in runtime.precisions:
            others = [n for n in registry.names("runtimes") if self.precision in runtime_class(n).precisions]
            raise ValueError(f"precision {self.precision} is for runtime {' or '.join(others)}; "
                             f"{self.runtime} takes {', '.join(runtime.precisions)}")  # fmt: skip
        return self

    def _check_fleet(self) -> None:
        if self.host is not None and self.hosts is not None:
            raise ValueError("give host (one device) or hosts (a fleet of identical boards), not both")
        if self.hosts is None and "fleet" in self.model_fields_set:
            raise ValueError("fleet applies to a target with hosts: [...]")
        devices = [h.device for h in self.hosts or []]
        twice = sorted({d for d in devices if devices.count(d) > 1})
        if twice:
            raise ValueError(f"hosts: {', '.join(twice)} listed twice; list each board once")
        names = [b.name for b in self.boards()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"hosts: two boards are named {', '.join(twice)}; give each its own name")

    def boards(self) -> list[HostSpec]:
        """A fleet's boards, each with its name (given, or the address; with the port where two share
        an address)."""
        hosts = self.hosts or []
        addresses = [h.address for h in hosts]
        return [h if h.name else h.model_copy(update={"name": board_name(h, addresses.count(h.address) > 1)})
                for h in hosts]  # fmt: skip

    def devices(self) -> set[str]:
        """The machines measuring this target ("local" for this one): targets sharing one take turns."""
        hosts = self.hosts or ([self.host] if self.host else [])
        return {h.device for h in hosts} or {"local"}


def board_name(host: HostSpec, with_port: bool) -> str:
    """A name a report can use for a board: the address, characters a name cannot hold as '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", host.address).lstrip("._-") or "board"
    return f"{name}-{host.port}" if with_port else name


RUNTIME_OPTIONS = {"tensorrt": TensorRTOptions}  # target sections of runtime-specific settings


def builtin_dirs() -> list[Path]:
    """Where shipped targets are found: the source checkout's targets/, then the wheel's copy."""
    package = Path(__file__).resolve().parent
    return [package.parent / "targets", package / "_targets"]


def find_target(name: str, search: list[Path]) -> Path | None:
    """A target given by name (`cpu-onnxruntime`) or by YAML path, looked up in `search`."""
    candidates = [name] if name.endswith((".yaml", ".yml")) else [f"{name}.yaml", f"{name}.yml"]
    for folder in [*search, *builtin_dirs()]:
        for candidate in candidates:
            path = folder / candidate
            if path.is_file():
                return path
    return None


def known_target_names(search: list[Path]) -> list[str]:
    """Names of the target files in `search` and the shipped ones (YAML files with a `runtime:`)."""
    names = {p.stem for d in [*search, *builtin_dirs()] if d.is_dir() for p in d.glob("*.yaml") if _is_target(p)}
    return sorted(names)


def _is_target(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "runtime" in data


def load_target(path: Path) -> TargetSpec:
    data, marks = read_yaml(path, what="target")
    return validate(TargetSpec, data, marks, str(path), what="target")


def missing_target_problem(name: str, search: list[Path], where: Problem) -> Problem:
    known = known_target_names(search)
    message = f"target '{name}' not found{suggest(name, known)}; known targets: {', '.join(known)}"
    return Problem(where.path, message, where.file, where.line, where.column)


def resolve_targets(refs: list, search: list[Path]) -> list[TargetSpec]:
    """Turn a recipe's `targets:` entries (names, paths or inline specs) into specs."""
    out: list[TargetSpec] = []
    for ref in refs:
        if isinstance(ref, TargetSpec):
            out.append(ref)
            continue
        path = find_target(ref, search)
        if path is None:
            known = known_target_names(search)
            raise UsageError(f"invalid target: '{ref}' not found{suggest(ref, known)}; known targets: {', '.join(known)}",
                             hint="name a shipped target or a YAML file in ./ or ./targets/, or give a target file's path")  # fmt: skip
        out.append(load_target(path))
    return out
