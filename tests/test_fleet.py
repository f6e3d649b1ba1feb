"""A fleet of boards (`hosts:`), measured in parallel: real OpenSSH servers on loopback play the
boards; one board's Python fails after its first job, playing a board that drops out mid-run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from compress.agent.profiling import summarize
from compress.measure.fleet import pool, turns
from compress.report.schema import Latency
from compress.targets import TargetSpec, load_target
from tests import sshd
from tests.conftest import write_mlp_onnx
from tests.test_cli import compress

needs_sshd = pytest.mark.skipif(sshd.skip_reason() is not None, reason=sshd.skip_reason() or "")
PROTOCOL = "protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.3, max_seconds: 5, rounds: 2}"


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    started = [sshd.start(tmp_path_factory.mktemp(f"board{i}")) for i in range(2)]
    yield [dev for dev, _ in started]
    for _, process in started:
        process.terminate()
        process.wait(timeout=10)


def timed_python(dev: sshd.Device, fail_after: int | None = None, peer: tuple[sshd.Device, int] | None = None) -> str:
    """The board's Python, logging when each job starts and ends; with `fail_after`, every job after
    that many fails the way a board that lost power or its runtime does. With `peer` (a board and a
    count), the board's k-th job goes on only once the peer has started min(k, count) jobs (or 30 s
    have passed), so the test sees one interleaving of the boards, not whichever a loaded machine gives."""
    wrapper = dev.folder / f"python-{fail_after}"
    wait = ""
    if peer is not None:
        other, most = peer
        wait = (f'k=$(wc -l < {dev.folder}/jobs.log); [ "$k" -gt {most} ] && k={most}; i=0\n'
                f'while [ "$(cat {other.folder}/jobs.log 2>/dev/null | wc -l)" -lt "$k" ] && [ $i -lt 300 ]; '
                'do sleep 0.1; i=$((i+1)); done\n')  # fmt: skip
    fail = (f'[ "$(wc -l < {dev.folder}/jobs.log)" -gt {fail_after} ] && {{ echo "board lost" >&2; exit 1; }}\n'
            if fail_after is not None else "")  # fmt: skip
    wrapper.write_text(f'#!/bin/sh\necho "start $(date +%s.%N)" >> {dev.folder}/jobs.log\n{wait}{fail}'
                       f'{dev.python} "$@"\ncode=$?\necho "end $(date +%s.%N)" >> {dev.folder}/times.log\nexit $code\n')  # fmt: skip
    wrapper.chmod(0o755)
    (dev.folder / "jobs.log").unlink(missing_ok=True)
    (dev.folder / "times.log").unlink(missing_ok=True)
    return str(wrapper)


def fleet_yaml(name: str, boards: list[tuple[sshd.Device, str]], fleet: str) -> str:
    hosts = "".join(
        f"  - {{name: board{i}, address: 127.0.0.1, port: {dev.port}, user: {dev.user}, identity_file: {dev.identity}, "
        f"known_hosts: {dev.known_hosts}, python: {python}, workdir: {dev.folder / 'work'}, connect_timeout_s: 5}}\n"
        for i, (dev, python) in enumerate(boards)
    )  # fmt: skip
    return (
        f"name: {name}\nruntime: onnxruntime\nthreads: 1\nbatch_sizes: [1]\n{PROTOCOL}\nfleet: {fleet}\nhosts:\n{hosts}"
    )


def models(tmp_path, count: int) -> list[str]:
    return [str(write_mlp_onnx(tmp_path / f"m{i}.onnx")) for i in range(count)]


def times(dev: sshd.Device) -> tuple[list[float], list[float]]:
    starts = [float(line.split()[1]) for line in (dev.folder / "jobs.log").read_text().splitlines()]
    ends = [float(line.split()[1]) for line in (dev.folder / "times.log").read_text().splitlines()]
    return starts, ends


@needs_sshd
def test_spread_deals_variants_to_free_boards_and_a_board_dropping_out_costs_only_itself(boards, tmp_path):
    steady, flaky = boards
    target = tmp_path / "fleet.yaml"
    # The boards start their first jobs together, and the steady board's second job waits for the flaky
    # board to start its second (the one it fails), so the flaky board is sure to take a second job.
    pythons = [timed_python(steady, peer=(flaky, 2)), timed_python(flaky, 1, peer=(steady, 1))]
    target.write_text(fleet_yaml("fleet", list(zip(boards, pythons, strict=True)), "spread"))
    out = tmp_path / "out"
    result = compress("profile", *models(tmp_path, 4), "-t", str(target), "-o", str(out))
    assert result.returncode == 0, result.stderr  # every variant was measured, by one board or the other
    report = json.loads((out / "report.json").read_text())
    (info,) = report["targets"]
    records = {b["name"]: b for b in info["boards"]}
    assert records["board1"]["error"] and "board lost" in records["board1"]["error"]
    assert len(records["board1"]["variants"]) == 1 and records["board0"]["error"] is None
    assert sorted(records["board0"]["variants"] + records["board1"]["variants"]) == ["m0", "m1", "m2", "m3"]
    for v in report["variants"]:
        (lat,) = v["latency"]
        (board,) = lat["boards"]
        assert v["name"] in records[board]["variants"] and lat["boards"][board] == lat["p50_ms"]
    assert any("board board1" in w and "dropped out" in w for w in report["warnings"])
    # The two boards measured at the same time: the flaky board's first job overlapped the steady one's.
    (flaky_start, *_), (flaky_end, *_) = times(flaky)
    steady_starts, steady_ends = times(steady)
    assert steady_starts[0] < flaky_end and flaky_start < steady_ends[0]
    assert len(steady_starts) == 3  # its own share, then the variant the flaky board failed on
    markdown = (out / "report.md").read_text()
    assert "Fleet of 2 boards" in markdown and "Board board1 (" in markdown and "dropped out" in markdown


@needs_sshd
def test_merged_pools_every_boards_calls_and_apart_makes_a_target_per_board(boards, tmp_path):
    a, b = boards
    merged = tmp_path / "merged.yaml"
    merged.write_text(fleet_yaml("merged", [(a, timed_python(a)), (b, timed_python(b))], "merged"))
    apart = tmp_path / "apart.yaml"
    apart.write_text(fleet_yaml("apart", [(a, str(a.python)), (b, str(b.python))], "apart"))
    out = tmp_path / "out"
    result = compress("profile", *models(tmp_path, 2), "-t", str(merged), "-t", str(apart), "-o", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    infos = {t["name"]: t for t in report["targets"]}
    assert set(infos) == {"merged", "apart.board0", "apart.board1"}
    assert infos["apart.board1"]["host"] == f"{b.user}@127.0.0.1:{b.port}" and infos["apart.board1"]["boards"] is None
    assert [r["variants"] for r in infos["merged"]["boards"]] == [["m0", "m1"], ["m0", "m1"]]
    for v in report["variants"]:
        pooled = next(lat for lat in v["latency"] if lat["target"] == "merged")
        per_board = [lat for lat in v["latency"] if lat["target"].startswith("apart.")]
        assert set(pooled["boards"]) == {"board0", "board1"} and len(per_board) == 2
        low, high = sorted(pooled["boards"].values())
        assert low <= pooled["p50_ms"] <= high  # the median of all calls lies between the boards' medians
        assert pooled["iterations"] >= 2 * 10  # both boards' calls, each at least the protocol's minimum
    assert len(times(a)[0]) == 1 and len(times(b)[0]) == 1  # one job per board for the merged target


def test_pooling_widens_the_interval_by_the_spread_between_boards():
    rng = np.random.default_rng(0)
    fast, slow = rng.normal(1.0, 0.01, 400), rng.normal(1.2, 0.01, 400)
    entries = []
    for board, calls in (("a", fast), ("b", slow)):
        medians = [float(np.median(block)) for block in np.split(calls, 4)]
        stats = summarize(calls, 1, medians=medians).to_dict()
        entries.append((board, Latency(target="t", runtime="onnxruntime", batch_size=1, threads=1, precision="fp32",
                                       **stats), (calls, medians)))  # fmt: skip
    merged = pool(entries, ci_target=0.0)
    both = np.concatenate([fast, slow])
    assert merged.p50_ms == pytest.approx(np.percentile(both, 50), rel=1e-4) and merged.iterations == 800
    assert merged.p99_ms == pytest.approx(np.percentile(both, 99), rel=1e-4) and merged.boards == {
        "a": entries[0][1].p50_ms, "b": entries[1][1].p50_ms}  # fmt: skip
    # Each board alone is sure of its p50 to within 1 %; the fleet's p50 is uncertain by most of the
    # 0.2 ms between its boards (the order statistics of 800 pooled calls alone would say ±0.01).
    assert all((e.p50_ci_high_ms - e.p50_ci_low_ms) < 0.02 for _, e, _ in entries)
    assert merged.p50_ci_high_ms - merged.p50_ci_low_ms > 0.15


def spec(name: str, hosts: list[str] | None = None, host: str | None = None) -> TargetSpec:
    return TargetSpec.model_validate({"name": name, "runtime": "onnxruntime", "host": host, "hosts": hosts})


def test_targets_on_one_device_take_turns_and_different_devices_run_at_once():
    targets = [spec("here"), spec("a", host="u@a"), spec("fleet", hosts=["b", "c"]), spec("here2"),
               spec("c-again", host="c"), spec("d", host="d"), spec("a-other-user", host="v@a")]  # fmt: skip
    groups = [[t.name for t in group] for group in turns(targets)]
    assert sorted(groups) == sorted([["here", "here2"], ["a", "a-other-user"], ["fleet", "c-again"], ["d"]])


def test_fleet_mistakes_are_refused_at_their_place(write):
    from compress.errors import RecipeError

    cases = {
        "hosts: [a, b, a]": "a:22 listed twice",
        "host: a\nhosts: [b]": "give host (one device) or hosts",
        "fleet: merged": "fleet applies to a target with hosts",
        "hosts: [{address: a, name: x}, {address: b, name: x}]": "two boards are named x",
        "hosts: [a]\nfleet: pooled": "expected one of: spread, merged, apart",
    }
    for text, expected in cases.items():
        path = write("t.yaml", f"name: t\nruntime: onnxruntime\n{text}\n")
        with pytest.raises(RecipeError) as info:
            load_target(path)
        assert expected in str(info.value.problems[0]) and re.search(r"t\.yaml:\d", str(info.value.problems[0]))


def test_boards_are_named_by_address_with_the_port_only_where_two_share_one():
    target = spec(
        "j", hosts=["nvidia@jetson-01.lab", "10.0.0.7:2222", "10.0.0.7:2223", {"address": "x", "name": "top"}]
    )
    assert [b.name for b in target.boards()] == ["jetson-01.lab", "10.0.0.7-2222", "10.0.0.7-2223", "top"]


def test_a_job_for_a_fleet_board_carries_no_fleet_settings(tmp_path, mlp):
    from compress.artifact import Kind
    from compress.measure.jobs import Deployable, Inputs, write_job

    target = spec("j", hosts=["a", "b"])
    board = target.model_copy(update={"host": target.boards()[0], "hosts": None})
    write_job(tmp_path, board, {"m": Deployable(mlp, Kind.ONNX, "fp32")},
              Inputs({1: {"x": np.zeros((1, 64), np.float32)}}), copy_models=True, keep_samples=True)  # fmt: skip
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["samples"] is True and not {"host", "hosts", "fleet"} & set(job["target"])
    assert job["models"]["m"]["file"].startswith("../../models/")
