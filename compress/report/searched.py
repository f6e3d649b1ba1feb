"""The report's account of a search: every trial, what it cost, and why the winner won, with each
candidate's accuracy drop on validation (where the search judged it) beside its drop on test (what
the report measured afterwards), flagging a limit met on one and missed on the other."""

from __future__ import annotations

from compress.report.diagnose import coarse_budget, drops_on_test
from compress.report.schema import Report, Trial


def drop_on_test(report: Report, trial: Trial) -> float | None:
    """Points the candidate lost against the baseline on the test split, on the search target."""
    by_name = {v.name: v for v in report.variants}
    base, cand = by_name.get(report.baseline), by_name.get(trial.candidate or "")
    drop = drops_on_test(base, cand).get(report.search.target) if base and cand else None
    return None if drop is None else round(drop, 4)


HEADER = ("trial", "settings", "candidate", "val Δ pts", "test Δ pts", "p50 ms", "× faster", "MB", "verdict", "s")


def search_note(report: Report) -> str:
    """What was searched and how, then the winner and why (one paragraph)."""
    search = report.search
    limits = ", ".join(f"{k} {v}" for k, v in search.limits.items()) or "none"
    aim = "p50 as a ratio to the baseline's, measured together" if search.minimize == "p50" else "file size"
    winner = f"Winner: {search.why}." if search.best is not None else f"No winner: {search.why}."
    return (f"Target {search.target} at batch {search.batch_size}; minimized: {aim}; limits: {limits}; sampler "
            f"{search.sampler}. Trials are judged on the validation split; the test drop is from this report's "
            f"measurements. {winner}")  # fmt: skip


def search_table(report: Report) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    return HEADER, [row(report, t) for t in report.search.trials] if report.search else []


def search_lines(report: Report) -> list[str]:
    if report.search is None:
        return []
    header, rows = search_table(report)
    lines = ["## Search", "", search_note(report), ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return lines + [f"- {w}" for w in flags(report)] + ([""] if flags(report) else [])


def row(report: Report, t: Trial) -> tuple[str, ...]:
    settings = ", ".join(f"{k.rpartition('.')[2]}={_short(v)}" for k, v in t.params.items())
    if t.error:
        return (
            str(t.number),
            settings,
            t.candidate or "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            f"failed: {t.error}",
            f"{t.seconds:.0f}",
        )
    drop, tested = t.baseline_val_accuracy - t.val_accuracy, drop_on_test(report, t)
    verdict = (
        ("winner" if t.number == report.search.best else "meets limits") if t.feasible else "; ".join(t.violations)
    )
    # Signed as in the variant tables: negative is points lost against the baseline.
    return (str(t.number), settings, t.candidate or "–", f"{-drop:+.2f}", "–" if tested is None else f"{-tested:+.2f}",
            f"{t.p50_ms:.4g}", f"{t.baseline_p50_ms / t.p50_ms:.2f}×", f"{t.size_mb:.3g}", verdict, f"{t.seconds:.0f}")  # fmt: skip


def flags(report: Report) -> list[str]:
    """An accuracy limit finer than the validation split can judge, and trials that met it on validation
    but not on test."""
    limit = report.search.limits.get("max_accuracy_drop")
    if limit is None:
        return []
    coarse = coarse_budget(limit, report.search.val_examples)
    out = [f"max_accuracy_drop: {coarse}"] if coarse else []
    for t in report.search.trials:
        tested = drop_on_test(report, t)
        if t.feasible and tested is not None and tested > limit:
            out.append(f"trial {t.number} ({t.candidate}) met the {limit}-point limit on validation but lost "
                       f"{tested:.2f} points on test")  # fmt: skip
    return out


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
