"""URLs with their secrets redacted before they are logged or printed (`common.urls`)."""

from __future__ import annotations

import pytest

from common.urls import redact_url


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:p%40ss@cache.example:6380", "rediss://app:***@cache.example:6380"),
    ("postgresql://docvec:hunter2@db/docvec?sslmode=require", "postgresql://docvec:***@db/docvec?sslmode=require"),
    ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("sqlite:////var/lib/docvec/docvec.db", "sqlite:////var/lib/docvec/docvec.db"),
    ("redis://:pw@host:notaport", "redis://:***@host:notaport"),
    ("http://[::1:pw@host/", "<unparsable URL>"),
])
def test_passwords_never_show(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("s3cret", "hunter2", "p%40ss", ":pw@"):
        assert secret not in redact_url(url)
