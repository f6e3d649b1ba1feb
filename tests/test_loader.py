"""Training batches read ahead by worker processes (data.workers) give the same results as reading
them in the training process, and leave nothing running."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT, TINY_TARGET
from tests.test_cli import compress
from tests.test_data import image_folder

WORKERS_PROGRAM = """
import sys
import numpy as np
from compress.data.rows import RowFile
from compress.stages.loader import Reader

folder = sys.argv[1]
x = np.arange(200 * 12, dtype=np.float32).reshape(200, 3, 2, 2)
np.save(folder + "/x.npy", x)
y = np.arange(200)
batches = [np.random.default_rng(e).permutation(200)[:48] for e in range(5)]
with Reader(RowFile(folder + "/x.npy"), y, workers=2) as read:
    for epoch in range(2):  # the same workers serve each epoch's new order
        order = batches[epoch * 2 : epoch * 2 + 3]
        got = list(read(order))
        assert len(got) == len(order)
        for idx, (xb, yb) in zip(order, got, strict=True):
            assert np.array_equal(xb, x[idx]) and np.array_equal(yb, idx)
    workers = read.loader._iterator._workers
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
assert not any(w.is_alive() for w in workers)
print("ok")
"""


def test_workers_read_the_batches_asked_for_in_order_and_stop_when_closed(tmp_path):
    # In a process of its own, as training runs: worker processes must not outlive the test's reader.
    done = subprocess.run([sys.executable, "-c", WORKERS_PROGRAM, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_training_with_workers_gives_the_same_variants_and_measures_after(write, tmp_path):
    image_folder(tmp_path / "imgs", classes=3, per_class=30, size=20)
    write("tiny-ort.yaml", TINY_TARGET)
    recipe = write(
        "r.yaml",
        """\
        name: loaders
        seed: 0
        model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
        data: {source: imagefolder, path: imgs, image_size: 16, channels: 3}
        stages:
          - {type: train, epochs: 2, batch_size: 16, lr: 0.01}
          - {type: export}
        targets: [tiny-ort]
        """,
    )
    reports = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        # Training in this process, then a local measuring job: the case a forked worker crashed.
        result = compress("run", str(recipe), "-o", str(out), "--set", f"data.workers={workers}")
        assert result.returncode == 0, result.stderr
        reports[workers] = json.loads((out / "report.json").read_text())
        assert ("reading batches in 2 worker processes" in result.stderr) == (workers == 2)
    assert (tmp_path / "out0/models/fp32.onnx").read_bytes() == (tmp_path / "out2/models/fp32.onnx").read_bytes()
    accuracies = {w: [v["accuracy"]["value"] for v in r["variants"]] for w, r in reports.items()}
    assert accuracies[0] == accuracies[2]
