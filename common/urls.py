"""Service URLs as they may be shown: in logs, error messages and what the CLI prints."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_KEYS = frozenset({"password", "pass", "pwd", "token", "secret"})


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or a `password=` query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show nothing of it that may be secret
        return "<unparsable URL>"
    netloc, query = parts.netloc, parts.query
    if password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing secret (and `sqlite:////abs/path` keeps its slashes)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
