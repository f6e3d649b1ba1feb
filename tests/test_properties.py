"""Property-based tests: whatever the input, compress fails only with its own errors (in-process:
CompressError; on the command line: a documented exit code and no traceback) and writes nothing
outside the output folder it was given.

Inputs are generated (recipes as YAML text and as mappings with random keys, types, nesting and
aliases; `--set` items; .npz arrays of many dtypes and shapes; report.json contents) and, to reach
past the first check, mutated from valid ones. Bounded to run in well under a minute.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compress.errors import CompressError, ExitCode, Problem
from compress.recipe import recipe_from_text
from compress.recipe.overrides import apply_override
from tests.conftest import ROOT

settings.register_profile(
    "compress",
    max_examples=100,
    deadline=None,
    database=None,  # no example database kept between runs
    derandomize=bool(os.environ.get("CI")),  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A longer search by hand: COMPRESS_HYPOTHESIS_PROFILE=explore pytest tests/test_properties.py
settings.register_profile("explore", settings.get_profile("compress"), max_examples=1000, derandomize=False)
settings.load_profile(os.environ.get("COMPRESS_HYPOTHESIS_PROFILE", "compress"))

DOCUMENTED = {ExitCode.OK, ExitCode.GATE_FAILED, ExitCode.BAD_INPUT, ExitCode.RUNTIME_MISSING, ExitCode.STAGE_FAILED,
              ExitCode.LOCKED, ExitCode.TARGET_FAILED, ExitCode.INTERRUPTED}  # fmt: skip


def schema_keys() -> list[str]:
    """Every key a recipe's schema knows, so generated mappings often hit real fields."""
    from compress.recipe import recipe_json_schema

    keys: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(recipe_json_schema())
    return sorted(keys)


KEYS = schema_keys()
WORDS = ["train", "export", "quantize", "prune", "finetune", "resnet", "vit", "mobilenetv2", "digits", "npz",
         "imagefolder", "text", "cpu-onnxruntime", "cpu-openvino", "gpu-tensorrt", "fp32", "int8", "hf:nothing",
         "torchvision:resnet18", "timm:x", "zoo:resnet", "model", "teacher", "classification", "embedding", "grid",
         "random", "p50", "p99", "5%", "stages[train].epochs", "stages[prune].ratio", "x.py:build", "", " ", "$",
         "../../etc", "~", "..", "/dev/null", "a" * 300]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12), st.sampled_from(WORDS),
    st.dates(),
)  # fmt: skip
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4), max_leaves=10
)

BASE = {
    "name": "r", "seed": 0,
    "model": {"arch": "resnet", "options": {"width": 8, "blocks": [1, 1]}},
    "data": {"source": "digits", "image_size": 16},
    "stages": [{"type": "train", "epochs": 1}, {"type": "export"}, {"type": "quantize", "calibration": {"samples": 8}},
               {"type": "prune", "input": "train", "ratio": 0.5},
               {"type": "finetune", "epochs": 1, "distill": {"temperature": 4.0, "alpha": 0.7}},
               {"type": "export", "name": "export-pruned", "variant": "pruned"}],
    "targets": ["cpu-onnxruntime"],
    "report": {"baseline": "fp32", "pareto_batch_size": 1},
    "gates": {"max_size_mb": 5, "max_latency_ms": [{"max_ms": 3, "percentile": "p90"}]},
    "sweep": {"parameters": {"stages[prune].ratio": [0.3, 0.5]}},
}  # fmt: skip


def paths(node, prefix=()):
    """Every path into nested dicts and lists, the root included."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from paths(child, (*prefix, key))


def get(node, path):
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw, base, replacements=None):
    """`base` with a few random edits: a value replaced, a key dropped or added, or a subtree shared
    with another place (PyYAML then writes it once with an anchor and refers to it by alias)."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(data))))
        if not where:
            continue
        parent, last = get(data, where[:-1]), where[-1]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "share"]))
        if action == "replace":
            parent[last] = draw(values if replacements is None else replacements)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(values if replacements is None else replacements)
        elif action == "share":  # neither inside `where` nor around it: no cycles; then no more edits
            apart = [p for p in paths(data) if p and p[: len(where)] != where and where[: len(p)] != p]
            if apart:
                parent[last] = get(data, draw(st.sampled_from(apart)))
                break
    return data


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def files_under(folder: Path) -> set[Path]:
    """Every path below `folder`, less hypothesis's own cache (kept in the working folder)."""
    return {p for p in folder.rglob("*") if ".hypothesis" not in p.parts}


@pytest.fixture(scope="module")
def sandbox():
    """The working folder of every example: nothing may appear in it but what a test allows."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="compress-properties-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(cwd)


# ---------------------------------------------------------------------------------------- recipes


def top_level() -> set[str]:
    return {p.name for p in ROOT.iterdir()} - {".hypothesis"}


def load_only_compress_errors(folder: Path, text: str, overrides: tuple[str, ...] = ()) -> None:
    before = files_under(folder), top_level()
    try:
        recipe_from_text(text, "r.yaml", overrides)
    except CompressError as exc:
        assert exc.lines() and all(isinstance(p, Problem) for p in getattr(exc, "problems", []))
        for problem in getattr(exc, "problems", []):
            str(problem)  # every problem renders
    assert (files_under(folder), top_level()) == before


@given(st.text(max_size=200))
@example("a: &x [*x]")
@example("name: &n r\nmodel: {arch: *n}\nstages: [&s {type: train}, *s]\n")
@example("base: &b {arch: resnet}\nmodel:\n  <<: *b\n  options: {width: 4}\nname: r\nstages: [{type: export}]\n")
@example("? [a, b]\n: 1\n")
@example("!!binary aGVsbG8=")
@example("name: r\nmodel: {arch: resnet}\nstages: [{type: train}, {type: export}]\ntargets: [{name: x}]\n")
def test_recipe_text_fails_only_with_compress_errors(sandbox, text):
    load_only_compress_errors(sandbox, text)


@given(st.one_of(values, mutated(BASE)))
def test_generated_recipe_mappings_fail_only_with_compress_errors(sandbox, data):
    load_only_compress_errors(sandbox, dump(data))


# ---------------------------------------------------------------------------------------- --set

segment = st.one_of(st.sampled_from(KEYS), st.sampled_from(["stages", "name", "seed", "a", "b"]))
index = st.one_of(st.integers(-2, 9).map(str), st.sampled_from(["train", "export", "prune", "nope", "0x1"]))
field_path = st.lists(st.tuples(segment, st.lists(index, max_size=2)), min_size=1, max_size=4).map(
    lambda parts: ".".join(name + "".join(f"[{i}]" for i in idx) for name, idx in parts)
)
items = st.one_of(
    st.tuples(field_path, st.one_of(values.map(lambda v: json.dumps(v, default=str)), st.text(max_size=12))).map(
        lambda pair: f"{pair[0]}={pair[1]}"
    ),
    st.text(max_size=30),
)


@given(st.one_of(values, mutated(BASE)), items)
def test_overrides_return_problems_and_never_raise(data, item):
    if not isinstance(data, dict):
        data = {"value": data}
    problems = apply_override(data, item)
    assert all(isinstance(p, Problem) for p in problems)
    for problem in problems:
        assert str(problem).startswith(f"--set {item}")


@given(items)
def test_overrides_on_a_recipe_fail_only_with_compress_errors(sandbox, item):
    load_only_compress_errors(sandbox, dump(BASE), (item,))


# ---------------------------------------------------------------------------------------- npz data

dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(max_len=3), hnp.byte_string_dtypes(max_len=3),
                   hnp.datetime64_dtypes(), hnp.timedelta64_dtypes())  # fmt: skip
shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)
any_array = hnp.arrays(dtypes, shapes) | hnp.arrays(np.dtype(object), shapes, elements=st.none() | st.integers())


@st.composite
def npz_contents(draw):
    """Arrays named as the loader expects (often shaped almost right) or named at random."""
    n = draw(st.integers(0, 24))
    shape = st.sampled_from([(n, 5, 5), (n, 1, 4, 4), (n, 3, 4, 4), (n, 4, 4, 3), (n, 5), (n,)])
    x = draw(st.one_of(
        hnp.arrays(hnp.floating_dtypes(), shape, elements=st.floats(0, 1, width=16) if draw(st.booleans()) else None),
        hnp.arrays(np.uint8, shape),
        any_array,
    ))  # fmt: skip
    y = draw(st.one_of(
        hnp.arrays(hnp.integer_dtypes(), st.sampled_from([(n,), (max(n - 1, 0),), (n, 1)]),
                   elements=st.integers(-1, 5) if draw(st.booleans()) else None),
        any_array,
    ))  # fmt: skip
    arrays = {"x": x, "y": y}
    if draw(st.booleans()):
        arrays["class_names"] = draw(any_array)
    if draw(st.booleans()):
        arrays = {f"{k}_{s}": v for s in ("train", "val", "test") for k, v in arrays.items() if k != "class_names"}
    extra = draw(st.dictionaries(st.sampled_from(["x", "y", "x_val", "junk", "class_names"]), any_array, max_size=2))
    return {**arrays, **extra}


@given(st.one_of(npz_contents(), st.dictionaries(st.text("abcxy_", min_size=1, max_size=6), any_array, max_size=4)),
       st.integers(0, 3), st.sampled_from([1, 3]))  # fmt: skip
def test_npz_loader_fails_only_with_compress_errors(sandbox, arrays, seed, channels):
    from compress.data import load_data
    from compress.recipe import DataSpec

    path = sandbox / "d.npz"
    np.savez(path, **arrays)
    before = files_under(sandbox)
    try:
        splits = load_data(DataSpec(source="npz", path="d.npz", image_size=4, channels=channels), sandbox, seed)
    except CompressError:
        pass
    else:
        assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
        assert splits.input_shape == (channels, 4, 4) and np.isfinite(splits.x_train).all()
        assert min(len(splits.x_train), len(splits.x_val), len(splits.x_test)) > 0
    assert files_under(sandbox) == before


@given(st.binary(max_size=300))
@example(b"PK\x03\x04" + b"\x00" * 40)
@example(b"PK\x05\x06" + b"\x00" * 18)
@example(b"\x93NUMPY\x01\x00")
def test_npz_bytes_fail_only_with_compress_errors(sandbox, content):
    from compress.data import load_data
    from compress.recipe import DataSpec

    (sandbox / "b.npz").write_bytes(content)
    with pytest.raises(CompressError):
        load_data(DataSpec(source="npz", path="b.npz", image_size=4), sandbox, 0)


# ---------------------------------------------------------------------------------------- reports and gates


def valid_report() -> dict:
    from tests.test_report import sample_report

    return json.loads(sample_report().model_dump_json())


REPORT = valid_report()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10)
    | st.sampled_from(["t", "fp32", "int8", "p50", "accuracy", "onnxruntime"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=10,
)  # fmt: skip


def report_text(data) -> str:
    return json.dumps(data, allow_nan=True, default=str)


edge_values = st.sampled_from([0, -1, 0.0, -0.0, 1e308, float("nan"), float("inf"), "", [], {}]) | json_values
report_texts = st.one_of(
    st.text(max_size=100), json_values.map(report_text), mutated(REPORT, edge_values).map(report_text),
    st.just(report_text(REPORT)),
)  # fmt: skip
edge_floats = st.sampled_from([0.0, -1.0, 1e-300, 1e308, float("nan"), float("inf")]) | st.floats(0, 1e4)
variant_names = st.sampled_from(["fp32", "int8", "pruned", "failed[ratio=0.3]", "a$^$b", ""])


@st.composite
def report_dicts(draw) -> dict:
    """Reports that follow the schema, with the numbers a gate divides and compares at their edges."""
    targets = draw(st.lists(st.sampled_from(["t", "u"]), max_size=2, unique=True))

    def latency(target: str, batch: int) -> dict:
        p50, p90, p99 = (draw(edge_floats) for _ in range(3))
        return dict(target=target, runtime="onnxruntime", batch_size=batch, threads=1, precision="fp32", p50_ms=p50,
                    p90_ms=p90, p99_ms=p99, mean_ms=p50, std_ms=0.0, min_ms=p50, max_ms=p99, iterations=10,
                    seconds=1.0, throughput=draw(edge_floats))  # fmt: skip

    def accuracy(target: str) -> dict:
        return dict(metric="accuracy", value=draw(edge_floats), split="test", runtime="onnxruntime", target=target,
                    samples=10)  # fmt: skip

    variants = []
    for name in draw(st.lists(variant_names, max_size=4)):
        measured = draw(st.lists(st.sampled_from(targets), unique=True)) if targets else []
        per_target = [accuracy(t) for t in measured if draw(st.booleans())]
        variants.append(dict(name=name, stages=[], format="onnx", precision="fp32", path=f"{name}.onnx",
                             size_bytes=draw(st.sampled_from([0, 1, 10**6]) | st.integers(0, 10**8)),
                             accuracy=per_target[0] if per_target else None, accuracy_per_target=per_target,
                             latency=[latency(t, b) for t in measured for b in draw(st.sets(st.sampled_from([1, 4])))]))  # fmt: skip
    gates = st.dictionaries(st.sampled_from(["max_size_mb", "min_accuracy", "max_accuracy_drop", "variants", "x"]),
                            st.sampled_from([1, 5, 0.5]) | edge_values, max_size=2)  # fmt: skip
    return dict(created="2026-01-01T00:00:00+00:00", recipe=dict(name="r", path=None, hash="h"), environment={},
                baseline=draw(variant_names), pareto_batch_size=draw(st.sampled_from([1, 4, 0])),
                targets=[dict(name=t, runtime="onnxruntime", device="cpu", threads=1, batch_sizes=[1, 4], protocol={})
                         for t in targets], variants=variants, gates=draw(st.none() | gates))  # fmt: skip


@given(report_texts)
@example("[" * 100_000)
@example('{"schema_version": 1}')
def test_report_load_fails_only_with_compress_errors(sandbox, text):
    from compress.report.schema import Report

    path = sandbox / "report.json"
    path.write_text(text, encoding="utf-8")
    try:
        Report.load(path)
    except CompressError as exc:
        assert str(path) in exc.message


plain_numbers = st.sampled_from(["0", "1", "2", "5", "0.5", "100", "1e9"])
number = st.one_of(
    plain_numbers, plain_numbers, st.floats(allow_nan=True).map(str), st.sampled_from(["x", "", "-1", "5%"])
)
percent = st.sampled_from(["0%", "5%", "-3 %", "0", "10"]) | number
gate_options = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["--max-size-mb", "--max-latency-ms", "--min-accuracy", "--max-accuracy-drop",
                                   "--max-accuracy-regression", "--batch-size"]), number),
        st.tuples(st.sampled_from(["--max-latency-regression", "--max-size-regression"]), percent),
        st.tuples(st.sampled_from(["--percentile"]), st.sampled_from(["p50", "p90", "p99", "p42", ""])),
        st.tuples(st.sampled_from(["--target", "--variant"]), variant_names | st.sampled_from(["t", "u"])),
        st.tuples(st.just("--baseline"), st.sampled_from(["old.json", "old.json", "report.json", "missing.json"])),
        st.tuples(st.just("--junit"), st.sampled_from(["out/gates.xml", "out/sub/gates.xml"])),
    ),
    min_size=1,
    max_size=5,
).map(lambda pairs: [part for pair in pairs for part in pair])  # fmt: skip
reports = st.one_of(report_dicts().map(report_text), report_dicts().map(report_text),
                    mutated(REPORT, edge_values).map(report_text), report_texts)  # fmt: skip


@given(reports, reports, gate_options)
def test_gate_exits_with_a_documented_code_and_writes_only_its_outputs(sandbox, text, old, options):
    from typer.testing import CliRunner

    from compress.cli import app

    case = Path(tempfile.mkdtemp(dir=sandbox))
    (case / "report.json").write_text(text, encoding="utf-8")
    (case / "old.json").write_text(old, encoding="utf-8")
    before = files_under(case)
    os.chdir(case)
    try:
        env = {"GITHUB_STEP_SUMMARY": ""}
        result = CliRunner().invoke(app, ["gate", "report.json", *options], env=env, catch_exceptions=True)
    finally:
        os.chdir(sandbox)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        options, repr(result.exception), result.output)  # fmt: skip
    assert result.exit_code in DOCUMENTED and "Traceback" not in result.output, result.output
    assert all(p.is_relative_to(case / "out") for p in files_under(case) - before)
