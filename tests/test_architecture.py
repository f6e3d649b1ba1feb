"""The shape of the package: light entry points, no import cycles, small modules, a numpy-only agent."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compress import registry
from compress.agent.job import shipped_files

PACKAGE = Path(__file__).resolve().parent.parent / "compress"
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported: module-level statements, not TYPE_CHECKING blocks
    and not imports inside functions (those run only when called)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def internal_edges(name: str) -> set[str]:
    """compress modules that importing `name` runs: each one it names, and the packages above them
    (Python runs a package's __init__ first) other than those `name` itself lies in, which are
    already running when `name` is imported."""
    edges = set()
    for target in top_level_imports(MODULES[name]):
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            implicit_parent = prefix != target and name.startswith(prefix + ".")
            if prefix in MODULES and prefix != name and not implicit_parent:
                edges.add(prefix)
    return edges


def test_the_import_graph_has_no_cycles():
    graph = {name: internal_edges(name) for name in MODULES}
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_agent_ships_only_what_imports_numpy_and_the_standard_library():
    """A device has numpy and a runtime, nothing else: every shipped module imports only the stdlib,
    numpy and other shipped modules at module level (runtime packages are imported when used)."""
    shipped = {module_name(PACKAGE / f) for f in shipped_files()}
    for name in shipped:
        for target in top_level_imports(MODULES[name]):
            top = target.split(".")[0]
            if top == "compress":
                assert target in shipped or target not in MODULES, f"{name} imports {target}, which is not shipped"
            else:
                assert top in sys.stdlib_module_names or top == "numpy", f"{name} imports {target}"


def test_every_builtin_runtime_module_is_shipped():
    shipped = set(shipped_files())
    for value in registry.BUILTIN["runtimes"].values():
        module = value.partition(":")[0]
        assert module.replace("compress.", "", 1).replace(".", "/") + ".py" in shipped


PROBE = """
import json, sys
from compress.cli import app
sys.argv = ["compress", *json.loads(sys.argv[1])]
try:
    app()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "torch_pruning", "transformers")
               or m in ("compress.pipeline", "compress.stages"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def imported_by(*args: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_compress_is_light():
    done = subprocess.run([sys.executable, "-c", "import compress, sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, check=True)  # fmt: skip
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "onnxruntime", "openvino", "pydantic", "numpy")]
    assert [m for m in loaded if m.startswith("compress")] == ["compress"]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory) -> Path:
    from tests.test_gates import sample_report

    folder = tmp_path_factory.mktemp("report")
    sample_report().save(folder / "report.json")
    return folder


def test_gate_and_report_import_no_torch_and_no_pipeline(small_report):
    gate = imported_by("gate", str(small_report / "report.json"), "--max-size-mb", "100", cwd=small_report)
    assert gate == {"code": 0, "heavy": []}
    rendered = imported_by("report", str(small_report), cwd=small_report)
    assert rendered == {"code": 0, "heavy": []}
    assert (small_report / "report.html").is_file()


@pytest.mark.slow
def test_profile_imports_no_torch_and_no_pipeline(tmp_path):
    from tests.conftest import write_mlp_onnx

    write_mlp_onnx(tmp_path / "m.onnx")
    (tmp_path / "t.yaml").write_text("name: t\nruntime: onnxruntime\nprotocol: {warmup: 1, min_iterations: 5, "
                                     "min_seconds: 0.05, rounds: 1, ci_target: 0}\n")  # fmt: skip
    result = imported_by("profile", "m.onnx", "-t", "t.yaml", "-o", "out", "-q", cwd=tmp_path)
    assert result == {"code": 0, "heavy": []}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["variants"][0]["latency"]
