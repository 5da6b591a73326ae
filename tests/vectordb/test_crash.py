"""SIGKILL a writer process at random moments; every acknowledged batch must survive, the one in
flight must be all-or-nothing, and nothing else may appear."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vectordb

from .crash_writer import apply_model

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3


def _run_until_killed(directory: Path, first: int, rng: random.Random) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.vectordb.crash_writer", str(directory), str(first)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.3, 1.5))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read()
        proc.stdout.close()
        proc.wait()
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("ACK ")]


def _state(directory: Path) -> dict[int, int]:
    with vectordb.open_engine(directory, fsync=False) as eng:
        rows = eng.query("c", filter="id >= 0", output_fields=["n"])
    return {r["id"]: r["n"] for r in rows}


@pytest.mark.timeout(60)
def test_sigkill_keeps_every_acknowledged_batch(tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    directory = tmp_path / "db"
    model: dict[int, int] = {}
    first = 0
    for _ in range(ROUNDS):
        acked = _run_until_killed(directory, first, rng)
        assert acked == list(range(first, first + len(acked)))
        for batch_id in acked:
            apply_model(model, batch_id)
        in_flight = first + len(acked)
        with_in_flight = dict(model)
        apply_model(with_in_flight, in_flight)
        state = _state(directory)
        assert state in (model, with_in_flight), "acknowledged writes lost or a partial batch applied"
        model = state
        first = in_flight + 1
    assert first > ROUNDS  # the writer made progress
