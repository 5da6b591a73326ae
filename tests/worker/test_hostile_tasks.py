"""The hostile corpus through a running worker: every bad file fails its own task at once with a
clear PermanentError (no retry), the worker stays up, and good documents in the same batch finish."""

from __future__ import annotations

from typing import Any

import pytest

from common.runtime import Core
from common.settings import LimitsSettings
from lifecycle import documents as ingest
from tests.common.test_hostile import CASES
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

GOOD = "# Lighthouses\n\nA lighthouse keeper trimmed the wick and wound the clockwork every night.\n"


async def test_bad_files_fail_alone_and_the_rest_finish(core: Core, vectors: Any) -> None:
    kb = await ingest.create_kb(core, "hostile", tenant="default")
    # Cases that need lowered limits (to stay fast) are covered at the parser level; here the worker
    # runs with one set of limits, the defaults.
    rejected = [case for case in CASES if case.error is not None and case.limits == LimitsSettings()]
    good_before = (await submit_document(core, kb, "good-1.md", GOOD.encode()))[1]
    bad = [(case, (await submit_document(core, kb, case.filename, case.make()))[1]) for case in rejected]
    good_after = (await submit_document(core, kb, "good-2.md", GOOD.encode()))[1]
    async with running_worker(core, vectors) as worker:
        results = [(case, await wait_for_status(core, task.id, timeout_s=120)) for case, task in bad]
        goods = [await wait_for_status(core, t.id, timeout_s=120) for t in (good_before, good_after)]
        assert not worker.stats.retried, "no PermanentError is retried"
    for case, task in results:
        assert task.status == "failed", (case.filename, task.status, task.error)
        assert task.attempts == 1, case.filename
        assert case.filename in (task.error or ""), (case.filename, task.error)
    assert [t.status for t in goods] == ["done", "done"]
    assert len(results) >= 20
