"""`python -m tests.worker.fake_worker --consumer NAME`: a real `docvec worker` process (settings from
the environment, real Redis, real vector store server) whose only fake is a fast embedder with an
optional per-batch delay (`DOCVEC_TEST_EMBED_DELAY_S`), so fleet tests can kill it mid-task cheaply."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

import numpy as np

from common.settings import load_settings
from tests.fakes import HashEmbedder
from worker.main import run_worker


class SlowHashEmbedder(HashEmbedder):
    def __init__(self, delay_s: float) -> None:
        super().__init__(dim=64)
        self._delay_s = delay_s

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        time.sleep(self._delay_s)
        return super().encode(texts, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embedder = SlowHashEmbedder(float(os.environ.get("DOCVEC_TEST_EMBED_DELAY_S", "0")))
    asyncio.run(run_worker(load_settings(), consumer=args.consumer, concurrency=args.concurrency,
                           embedder=embedder))


if __name__ == "__main__":
    main()
