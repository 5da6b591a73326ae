"""Property-based API testing: schemathesis generates requests from the app's own OpenAPI document and
checks that no input gives a 5xx, and that every status, content type and body is the documented one.

It runs against a real uvicorn (127.0.0.1, free port) with a valid admin key, in three passes: free
generation of valid input (mostly unknown names and ids: the 404 paths), of invalid input (which must
give a documented 4xx, never a 5xx), then valid input with path parameters fixed to a real knowledge
base, document and task, so the handlers' deeper paths run too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.live import LiveApi

API = "/api/v1"
MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
REQUEST_TIMEOUT_S = 30


def _seed(http: httpx.Client) -> dict[str, str]:
    assert http.post(f"{API}/kbs", json={"name": "docs"}).status_code == 201
    upload = http.post(f"{API}/kbs/docs/documents", files=[("files", ("a.md", b"# A\n\nalpha beta gamma\n"))])
    assert upload.status_code == 202, upload.text
    doc = upload.json()["documents"][0]
    return {"kb": "docs", "document_id": doc["document_id"], "task_id": doc["task_id"]}


def _run_operation(operation: Any, base_url: str, headers: dict[str, str],
                   mode: GenerationMode = GenerationMode.POSITIVE, **fixed: Any) -> None:
    @given(case=operation.as_strategy(mode, headers=headers, **fixed))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)

    check()


def test_the_api_matches_its_openapi_document(live_api: LiveApi) -> None:
    key = live_api.issue_key("fuzz", admin=True).secret
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=live_api.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
        ids = _seed(http)
        document = http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/tasks/{task_id}/events", "/metrics", "/api/v1/kbs"}

    failures: list[str] = []

    def attempt(label: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Unsatisfiable:  # invalid input asked of an operation that accepts anything (no failure)
            if "invalid input" not in label:
                failures.append(f"{label}: no valid input could be generated")
        except Exception as exc:  # collected: one report lists every non-conforming operation
            failures.append(f"{label}: {type(exc).__name__}: {exc}")

    for op in operations:
        attempt(op.label, lambda op=op: _run_operation(op, live_api.url, headers))
        attempt(f"{op.label} (invalid input)",
                lambda op=op: _run_operation(op, live_api.url, headers, GenerationMode.NEGATIVE))
    # Real objects; deletions last, and never the event stream of a live task (it lasts until the task ends).
    for op in sorted(operations, key=lambda o: o.method.upper() == "DELETE"):
        wanted = {name: value for name, value in ids.items() if "{" + name + "}" in op.path}
        if not wanted or op.path.endswith("/events"):
            continue
        attempt(f"{op.label} {wanted}",
                lambda op=op, wanted=wanted: _run_operation(op, live_api.url, headers, path_parameters=wanted))
    assert not failures, "\n\n".join(failures)
