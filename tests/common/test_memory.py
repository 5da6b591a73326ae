"""The allocator setting of the model-serving processes."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_mmap_threshold_is_pinned_on_glibc() -> None:
    # In a child process: the setting is process-wide and must not leak into the test session.
    code = "from common.memory import pin_mmap_threshold; print(pin_mmap_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True"
