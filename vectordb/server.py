"""`docvec vectordb`: an HTTP server over one `Engine`, speaking a subset of the Milvus RESTful API v2.

Every call is `POST /v2/vectordb/<category>/<action>` with a JSON object body; the endpoints, the
reply envelope and the error codes are described in `vectordb.rest` (the handlers) and
`vectordb.restproto` (the codes). This module is the HTTP side: bearer-token auth (compared in
constant time), the body size limit (HTTP 413), the per-request timeout (Milvus's `Request-Timeout`
header may shorten it; past it the reply is code 1852 and a proxy task not yet started is cancelled,
while a write already running completes), 401/404/405 for a wrong token, endpoint or method, and the
refusal to listen beyond loopback without a token. The same port also serves Milvus's gRPC protocol
(`vectordb.grpc_server`, told apart by `vectordb.portmux`), unless `--grpc-port` gives it its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import hmac
import ipaddress
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.errors import DocvecError, LimitExceeded, StageTimeout, Unauthorized
from vectordb.engine import DEFAULT_SEAL_ROWS, Engine
from vectordb.errors import InsecureServer
from vectordb.rest import Body, RestApi
from vectordb.restproto import API_PREFIX, CODE_PARAMETER_INVALID, IncorrectParameterFormat, code_for, wire_message

log = logging.getLogger(__name__)

DEFAULT_PORT = 19530
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------------------ the app


def _json_response(payload: Mapping[str, Any], status: int = 200) -> Response:
    # orjson: ~10x faster than json for float vectors; NaN/Infinity (strict JSON has none) become null.
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error_response(exc: DocvecError | Exception, status: int = 200) -> Response:
    message = wire_message(exc) if isinstance(exc, DocvecError) else f"internal error: {type(exc).__name__}"
    return _json_response({"code": code_for(exc), "message": message}, status)


def _authorized(header: str | None, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_json(request: Request, max_body_bytes: int) -> Mapping[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise LimitExceeded(f"request body of {declared} bytes exceeds the server's limit of {max_body_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise LimitExceeded(f"request body exceeds the server's limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # Python's json writes NaN/Infinity literals; accept them as that client meant them
            body = json.loads(raw)
        except ValueError as e:
            raise IncorrectParameterFormat(f"request body is not valid JSON: {e}") from None
    if body is None:  # `null`: what Milvus's own test client sends for "no parameters"
        return {}
    if not isinstance(body, dict):
        raise IncorrectParameterFormat("request body must be a JSON object")
    return body


def _timeout_s(header: str | None, limit_s: float) -> float:
    """Milvus's `Request-Timeout` header (seconds) can shorten the server's limit, never extend it."""
    try:
        asked = float(header) if header else 0.0
    except ValueError:
        asked = 0.0
    return min(asked, limit_s) if asked > 0 else limit_s


def create_app(
    engine: Engine,
    *,
    token: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> Starlette:
    """The ASGI app serving `engine`. The caller owns the engine (and closes it after the server stops)."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    if not request_timeout_s > 0:
        raise ValueError("request_timeout_s must be positive")
    api = RestApi(engine)

    async def endpoint(request: Request) -> Response:
        if not _authorized(request.headers.get("authorization"), token):
            return _error_response(Unauthorized("missing or wrong bearer token"), 401)
        path = request.url.path
        category, _, action = path[len(API_PREFIX) :].partition("/") if path.startswith(API_PREFIX) else ("", "", "")
        handler = api.handler(category, action)
        if handler is None:
            return _json_response({"code": CODE_PARAMETER_INVALID, "message": f"unknown endpoint {path}"}, 404)
        if request.method != "POST":
            return _json_response({"code": CODE_PARAMETER_INVALID, "message": f"{path} takes POST"}, 405)
        timeout_s = _timeout_s(request.headers.get("request-timeout"), request_timeout_s)
        try:
            body = Body(await _read_json(request, max_body_bytes))
            async with asyncio.timeout(timeout_s):
                reply = await handler(body)
        except LimitExceeded as e:
            return _error_response(e, 413)
        except TimeoutError:
            return _error_response(
                StageTimeout(f"{path} timed out after {timeout_s:g} s; a write that had started may still complete")
            )
        except DocvecError as e:
            return _error_response(e)
        except Exception as e:  # the request boundary: log it, answer 65535, keep serving
            log.exception("unexpected error serving %s", path)
            return _error_response(e)
        return _json_response({"code": 0, "data": reply.data, **reply.extra})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(host: str, token: str, *, insecure_no_token: bool = False) -> None:
    """Refuse to serve every collection, unauthenticated, to the network: a non-loopback `host`
    (0.0.0.0, a LAN address, a host name) needs a token, unless the operator says the network is trusted."""
    if token or insecure_no_token or is_loopback(host):
        return
    raise InsecureServer(
        f"refusing to serve the vector store on {host} without a token: anyone who can reach it could read and "
        "delete every collection. Set one with --token (or DOCVEC_VECTORDB__TOKEN) and give it to the clients "
        "(vectordb.token), bind to 127.0.0.1, or pass --insecure-no-token on a trusted network"
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after its graceful shutdown (killing the process with the default
    handler), which would skip closing the engine; forget it, so `run_server` closes the engine and returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    log.info("stopping on signal %s", ", ".join(str(sig) for sig in captured))
                    captured.clear()


def run_server(
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    fsync: bool = True,
    seal_rows: int = DEFAULT_SEAL_ROWS,
    log_level: str = "info",
    insecure_no_token: bool = False,
    grpc_port: int | None = None,
) -> None:
    """Serve the store at `data_dir` until SIGTERM/SIGINT, then drain requests and close the engine.

    The engine is opened before the port is bound, so a second server on the same directory fails at
    once with DataDirLocked (the directory's exclusive lock). A non-loopback `host` needs a `token`
    unless `insecure_no_token` (InsecureServer, before anything is opened or bound); the token guards
    REST and gRPC alike. The Milvus gRPC protocol (what pymilvus speaks, `vectordb.grpc_server`) is
    served on `port` beside REST (`vectordb.portmux`), or on `grpc_port` when one is given; on the
    same event loop either way.
    """
    check_exposure(host, token, insecure_no_token=insecure_no_token)
    grpc = _grpc_mode(grpc_port, port)
    engine = Engine.open(data_dir, fsync=fsync, seal_rows=seal_rows)
    try:
        if not token and not is_loopback(host):
            log.warning("serving the vector store on %s WITHOUT a token (--insecure-no-token): anyone who can "
                        "reach it can read and delete every collection", host)
        app = create_app(engine, token=token, max_body_bytes=max_body_bytes, request_timeout_s=request_timeout_s)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            log_level=log_level,
            timeout_graceful_shutdown=int(request_timeout_s) + 5,
        )
        if grpc is GrpcMode.OFF:
            _Server(config).run()  # installs SIGINT/SIGTERM handlers: stop accepting, drain, return
        else:
            asyncio.run(_serve_both(engine, config, host=host, grpc_port=None if grpc is GrpcMode.SAME_PORT
                                    else grpc_port, token=token, request_timeout_s=request_timeout_s,
                                    max_body_bytes=max_body_bytes))
    finally:
        engine.close()


class GrpcMode(enum.Enum):
    OFF = "off"  # pymilvus is not installed: REST only
    SAME_PORT = "same port"  # REST and gRPC on `port` (vectordb.portmux), as Milvus serves both on 19530
    OWN_PORT = "own port"  # gRPC on `grpc_port`


def _grpc_mode(grpc_port: int | None, port: int) -> GrpcMode:
    """gRPC on its own port when one is named (GrpcUnavailable without pymilvus), else on the REST port
    when pymilvus is installed, else off (said in the log)."""
    from vectordb.grpc_server import GrpcUnavailable, check_grpc_available

    if grpc_port is not None and grpc_port != port:
        check_grpc_available()
        return GrpcMode.OWN_PORT
    try:
        check_grpc_available()
    except GrpcUnavailable as exc:
        if grpc_port is not None:
            raise
        log.info("REST only: %s", exc.message)
        return GrpcMode.OFF
    return GrpcMode.SAME_PORT


async def _serve_both(engine: Engine, config: uvicorn.Config, *, host: str, grpc_port: int | None, token: str,
                      request_timeout_s: float, max_body_bytes: int) -> None:
    """REST (uvicorn, which handles the stop signals) and gRPC on one loop, gRPC on its own port or (with
    `grpc_port` None) relayed from REST's port through a private unix socket; gRPC stops after REST drained."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from vectordb.grpc_server import create_grpc_server
    from vectordb.portmux import sniffing_protocol

    with tempfile.TemporaryDirectory(prefix="docvec-grpc-") as private:
        unix_socket = None if grpc_port is not None else os.path.join(private, "grpc.sock")
        grpc_server, _ = create_grpc_server(engine, host=host, port=grpc_port or 0, token=token,
                                            request_timeout_s=request_timeout_s, max_message_bytes=max_body_bytes,
                                            unix_socket=unix_socket)
        await grpc_server.start()
        if unix_socket is not None:
            config.http = sniffing_protocol(AutoHTTPProtocol, unix_socket)
            log.info("serving the Milvus gRPC protocol on the REST port %s:%d", host, config.port)
        else:
            log.info("serving the Milvus gRPC protocol on %s:%d", host, grpc_port)
        try:
            await _Server(config).serve()
        finally:
            await grpc_server.stop(request_timeout_s)


def main(argv: list[str] | None = None) -> int:
    """`python -m vectordb.server --data DIR [--host H --port P --token T]`."""
    parser = argparse.ArgumentParser(prog="vectordb.server", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data directory (owned exclusively by this server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default="", help="require `Authorization: Bearer TOKEN` (gRPC: pymilvus token=)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="serve the Milvus gRPC protocol (pymilvus) on this port of its own (default: on --port)")
    parser.add_argument("--insecure-no-token", action="store_true",
                        help="allow a non-loopback --host without a token (trusted networks only)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--request-timeout-s", type=float, default=DEFAULT_REQUEST_TIMEOUT_S)
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync on writes (tests, benchmarks)")
    parser.add_argument("--seal-rows", type=int, default=DEFAULT_SEAL_ROWS, help="rows per sealed segment")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_server(
            args.data,
            host=args.host,
            port=args.port,
            token=args.token,
            max_body_bytes=args.max_body_bytes,
            request_timeout_s=args.request_timeout_s,
            fsync=not args.no_fsync,
            seal_rows=args.seal_rows,
            insecure_no_token=args.insecure_no_token,
            grpc_port=args.grpc_port,
        )
    except DocvecError as e:
        print(f"vectordb server: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
