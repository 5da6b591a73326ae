"""Every benchmark at its smoke size (`python -m bench.NAME --smoke`: seconds of work on tiny data, the code
of `--quick`): it runs to the end, prints JSON lines, and its last line is the summary with the keys SPEC
section 9 names for it. A rename elsewhere can then never break a benchmark silently. The figures are not
checked: tiny data measures nothing."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 180
STOP_GRACE_S = 30  # after SIGINT (its `finally` blocks stop the servers it started), before SIGKILL

# SPEC section 9, "Summary keys the benchmarks must print".
SUMMARY_KEYS: dict[str, frozenset[str]] = {
    "chaos": frozenset({"submitted", "done", "failed", "lost", "duplicate_chunks", "missing_chunks", "kills",
                        "redis_restarts", "recovery_s"}),
    "faults": frozenset({"documents", "done", "failed", "lost", "duplicate_chunks", "missing_chunks",
                         "stale_visible", "failed_by_infra", "garbage_left"}),
    "pipeline": frozenset({"chunks", "docvec_chunks_per_s", "bare_encode_chunks_per_s", "ratio_vs_bare_encode"}),
    "queue": frozenset({"docvec_tasks_per_s", "arq_tasks_per_s", "celery_tasks_per_s", "dramatiq_tasks_per_s",
                        "ratio_vs_fastest_peer"}),
    "scale": frozenset({"workers_1_chunks_per_s", "workers_2_chunks_per_s", "scaling_ratio", "rss_mb_start",
                        "rss_mb_end"}),
    "search": frozenset(f"{system}_c{clients}_{figure}" for system in ("docvec", "milvus_lite", "chroma")
                        for clients in (1, 8, 32) for figure in ("p50_ms", "p99_ms", "qps")),
    "sync": frozenset({"documents", "first_s", "unchanged_s", "unchanged_ratio", "edited_fraction", "edited_s",
                       "edited_ratio", "chunks_embedded", "chunks_reused"}),
    "vectordb": frozenset({"rows", "dim", "recall_at_10", "insert_rows_per_s", "search_qps", "qps_ratio_vs_faiss",
                           "qps_ratio_vs_milvus_lite", "insert_ratio_vs_milvus_lite", "milvus_lite_recall_at_10"}),
}
# bench.faults also prints `<fault>_count` and `<fault>_recovery_s` for every fault it injects (a fault this
# machine cannot inject has its count, 0, and `<fault>_skipped`).
FAULTS = ("worker_kill", "vectordb_restart", "redis_restart", "redis_empty", "postgres_restart", "s3_outage",
          "vectordb_disk_full")


def _is_main_guard(test: ast.expr) -> bool:
    """`__name__ == "__main__"`."""
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def runnable_benchmarks() -> set[str]:
    """The bench/ modules that run as `python -m bench.NAME`: those with a `__main__` block."""
    return {path.stem for path in (ROOT / "bench").glob("*.py")
            if any(isinstance(node, ast.If) and _is_main_guard(node.test)
                   for node in ast.parse(path.read_text(encoding="utf-8")).body)}


def required_keys(name: str, summary: dict[str, Any]) -> set[str]:
    keys = set(SUMMARY_KEYS[name])
    if name == "faults":
        keys |= {f"{fault}_count" for fault in FAULTS}
        keys |= {f"{fault}_recovery_s" for fault in FAULTS if f"{fault}_skipped" not in summary}
    return keys


def run_smoke(name: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench.NAME --smoke` from the repository root, in a process group of its own; past the
    timeout it gets SIGINT (it stops what it started), then the group gets SIGKILL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCVEC_")}  # its own settings only
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"bench.{name} --smoke ran past {RUN_TIMEOUT_S} s:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_every_benchmark_has_a_smoke_run() -> None:
    assert runnable_benchmarks() == set(SUMMARY_KEYS), "a benchmark without a smoke run here (or one gone)"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SUMMARY_KEYS))
def test_benchmark_runs_at_smoke_size_and_prints_its_summary(name: str) -> None:
    result = run_smoke(name)
    assert result.returncode == 0, f"bench.{name} --smoke exited {result.returncode}:\n{result.stderr[-4000:]}"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"bench.{name} printed nothing"
    assert all(line.get("bench") == name for line in lines), "every line is one JSON object of this benchmark"
    *measurements, summary = lines
    assert all("metric" in m and "value" in m and "unit" in m for m in measurements)
    assert summary.get("summary") is True, f"the last line is not the summary: {summary}"
    assert summary.get("smoke") is True
    missing = required_keys(name, summary) - summary.keys()
    assert not missing, f"bench.{name}'s summary lacks {sorted(missing)}: {summary}"
