"""The stage cache never serves a result made from inputs that have since changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compress.fingerprint import Fingerprints, code_fingerprint

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """
name: cache
model: {python: net.py:build}
data: {source: npz, path: data.npz, image_size: 8}
stages:
  - {type: train, epochs: 1}
  - {type: export}
targets: [tiny-ort]
"""

NET = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 3))
"""


def write_data(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((120, 8, 8), dtype=np.float32), y=rng.integers(0, 3, 120))


def run(folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "compress", "run", "r.yaml", "-o", "out", "-q"], cwd=folder,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads((folder / "out" / "report.json").read_text())


@pytest.mark.slow
def test_changed_data_or_model_code_is_recomputed(write, tmp_path):
    from tests.conftest import TINY_TARGET

    write("tiny-ort.yaml", TINY_TARGET)
    write("r.yaml", RECIPE)
    write("net.py", NET.replace("WIDTH", "16"))
    write_data(tmp_path / "data.npz", 0)
    first = run(tmp_path)
    assert first["cache"] == {"reused": 0, "computed": 3}
    assert run(tmp_path)["cache"] == {"reused": 3, "computed": 0}
    write_data(tmp_path / "data.npz", 1)  # same path, new content
    assert run(tmp_path)["cache"] == {"reused": 0, "computed": 3}
    write("net.py", NET.replace("WIDTH", "24"))  # the builder changed: a new model
    changed = run(tmp_path)
    assert changed["cache"] == {"reused": 0, "computed": 3}
    assert changed["variants"][0]["params"] != first["variants"][0]["params"]


def test_a_file_is_rehashed_only_when_its_size_or_time_changes(tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"a" * 100)
    prints = Fingerprints(tmp_path / "memo.json")
    first = prints.of([data])
    prints.save()
    again = Fingerprints(tmp_path / "memo.json")
    stat = data.stat()
    data.write_bytes(b"b" * 100)  # same size; restore the time so the memo answers
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert again.of([data]) == first, "unchanged size and time reuse the remembered digest"
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert again.of([data]) != first


def test_a_code_change_changes_the_code_fingerprint(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    before = code_fingerprint(Fingerprints(), package)
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert code_fingerprint(Fingerprints(), package) != before


def test_a_text_source_and_an_hf_model_key_on_their_tokenizer_and_weights_folders(tmp_path):
    from compress.data import data_inputs
    from compress.models import model_source
    from compress.recipe import DataSpec

    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (tmp_path / "s.tsv").write_text("a\tx\n")
    spec = DataSpec(source="text", path="s.tsv")
    assert data_inputs(spec, tmp_path, 0, "hf:encoder") == [tmp_path / "s.tsv", folder.resolve()]
    assert data_inputs(spec, tmp_path, 0, "resnet") == [tmp_path / "s.tsv"]  # no tokenizer to read
    source, name = model_source("hf:encoder")
    assert source.inputs(name, tmp_path) == [folder.resolve()]
