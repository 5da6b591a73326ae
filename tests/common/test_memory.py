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


def test_a_serving_process_freezes_its_heap_once_the_model_is_loaded() -> None:
    """`open_core(freeze_heap=True)`: after the first model load the heap is frozen (full collections no
    longer walk it); without it nothing is frozen. In a child process: freezing is process-wide."""
    code = """
import asyncio, gc
from common.runtime import EmbedderLoader
from common.settings import EmbeddingSettings
import common.runtime as runtime

class Model:
    dim = 4

runtime.build_embedder = lambda settings, onnx_cache_dir=None: Model()
async def main():
    for freeze in (False, True):
        loader = EmbedderLoader(EmbeddingSettings(), freeze_heap=freeze)
        before = gc.get_freeze_count()
        await loader.get()
        await loader.get()
        print(freeze, before, gc.get_freeze_count() > before)
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["False 0 False", "True 0 True"], out.stdout + out.stderr
