"""The edge every request passes first: a request id, the browser guard, errors in the client's format.

The one idea: proxygate listens on loopback without tokens, so the only stranger who can reach it
is a web page in the user's browser. Pages reach it two ways, and both are closed here, the way
Jupyter and the Docker API close them:

- DNS rebinding: a page on ``attacker.example`` re-resolves its name to 127.0.0.1 and reads our
  answers as same-origin. The browser still sends ``Host: attacker.example``, so on loopback only
  ``127.0.0.1``, ``localhost`` and ``[::1]`` (any port) plus ``allowed_hosts`` are served.
- CSRF: a page POSTs a "simple request" (``Content-Type: text/plain``, no preflight) to spend quota
  or reset accounts. Browsers always send ``Origin`` on such POSTs and CLI tools and SDKs never do,
  so an ``Origin`` that is not in ``allowed_origins`` (nor our own ``http://<allowed Host>``) is
  refused on every route but ``/healthz``. A listed origin's page gets the CORS answers its
  browser needs (a preflight, ``Access-Control-Allow-Origin``); no other origin ever does.

The admin API also always needs a token (server/admin.py). One middleware, ``edge``, does in
order: the request id, the browser guard, the ``RequestWatch``es (in-flight and refused-request
counts), client-format 404/405s, then the handler.

What fails before any middleware runs (a 64 KB header line, 500 headers, a bad chunk size) is
answered by ``EdgeRunner``'s connections: one JSON error body every SDK parses, never echoing
the request (aiohttp's own text/plain answer quotes the start of the bad line).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import http_exceptions, web

from proxygate.call import new_request_id
from proxygate.config import Settings
from proxygate.errors import ClientError, ProxyError
from proxygate.server.keys import SETTINGS
from proxygate.wire.errors import client_status, error_body
from proxygate.wire.ir import Format

log = logging.getLogger("proxygate")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
"Assigned once per request by ``assign_request_id``; handlers and the pipeline use it."
REQUEST_ID_HEADER = "x-proxygate-request-id"

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
"Host names a browser sends for the loopback server itself (any port)."
UNGUARDED_PATHS = frozenset({"/healthz"})
"Answered whatever the Origin: it tells a page nothing and monitors may run in a browser."
CORS_MAX_AGE_S = 600
"How long a browser may reuse a preflight answer for a listed origin."
EXPOSED_HEADERS = (
    "x-proxygate-request-id, x-proxygate-account, x-proxygate-route, retry-after, x-should-retry"
)
"Response headers a listed origin's page may read (CORS hides all but a few by default)."
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


def request_id(request: web.Request) -> str:
    """The request's id (one is made for a request that bypassed the middleware, e.g. in a test)."""
    found = request.get(REQUEST_ID)
    if found is None:
        found = request[REQUEST_ID] = new_request_id()
    return found


def client_format(path: str) -> Format:
    """The wire format a client on ``path`` reads its errors in (Chat's for anything unknown)."""
    if "/messages" in path:
        return Format.anthropic
    if path.startswith("/v1beta"):
        return Format.gemini
    if path.startswith(("/v1/responses", "/responses", "/backend-api")):
        return Format.responses
    return Format.chat


def render_error(fmt: Format, exc: ProxyError, request_id: str) -> web.Response:
    """``exc`` as the client's own error body, with the request id and SDK retry advice."""
    status = client_status(fmt, exc.error_class, exc.status)
    body = error_body(fmt, exc.error_class, exc.message, status=status, request_id=request_id)
    headers = {REQUEST_ID_HEADER: request_id}
    if status < 500 and status != 429:
        headers["x-should-retry"] = "false"
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def render_for_path(request: web.Request, exc: ProxyError) -> web.Response:
    """An error for whatever route ``request`` asked: the admin API's JSON, else the client's format."""
    rid = request_id(request)
    if not is_admin_path(request.path) and request.path not in UNGUARDED_PATHS:
        return render_error(client_format(request.path), exc, rid)
    return web.Response(
        status=exc.status,
        body=orjson.dumps({"error": exc.message}),
        headers={REQUEST_ID_HEADER: rid},
        content_type="application/json",
    )


def is_admin_path(path: str) -> bool:
    return path.startswith("/admin/") or path == "/metrics"


def log_rejection(request: web.Request, status: int, message: str) -> None:
    """One log line for a refused request: status, method, path (control characters escaped), id."""
    log.warning(
        "%s %d %s %s: %s",
        request_id(request),
        status,
        escape_controls(request.method),
        escape_controls(request.path),
        message,
    )


def escape_controls(text: str) -> str:
    """``text`` with control characters written as escapes: a CR/LF in a path forges no log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- the edge middleware ----------------------------------------------------------------------


class RequestWatch(Protocol):
    """Told of every request past the browser guard, by the edge middleware, without a
    middleware of its own: each middleware is a coroutine layer that every wake-up of the
    request walks, and five of them cost ~20 µs a JSON request (bench/README.md, issue 11)."""

    def enter(self, request: web.Request) -> Any:
        """Before the handler; what it returns is given back to ``leave``."""

    def leave(self, request: web.Request, entered: Any, status: int) -> None:
        """After the handler, also when it raised: ``status`` is the answer's, the
        ``HTTPException``'s, 499 when the client left (cancelled), 500 for a crash."""


WATCHES = web.AppKey("edge_watches", list[RequestWatch])


def watch(app: web.Application, watcher: RequestWatch) -> None:
    """Have the edge tell ``watcher`` of every request (before the app starts; inner after outer)."""
    app.setdefault(WATCHES, []).append(watcher)


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware, in this order: a request id on every answer (404s, 405s and crashes
    too); the browser guard (403 for a foreign Host or Origin, see the module docstring); the
    ``RequestWatch``es; unknown paths and methods as a 404 in the client's format."""
    rid = request[REQUEST_ID] = new_request_id()
    try:
        response: web.StreamResponse | None = _guarded(request)
        if response is None:
            watches = request.app.get(WATCHES, ())
            entered = [w.enter(request) for w in watches]
            status = 500
            try:
                response = await handler(request)
                status = response.status
            except web.HTTPException as exc:
                status = exc.status
                if status not in (404, 405):
                    raise
                response = _unknown_endpoint(request)
            except asyncio.CancelledError:
                status = 499  # the client left before an answer (handler_cancellation)
                raise
            finally:
                for w, e in zip(reversed(watches), reversed(entered), strict=True):
                    w.leave(request, e, status)
    except web.HTTPException as exc:
        if not exc.headers.get(REQUEST_ID_HEADER):
            exc.headers[REQUEST_ID_HEADER] = rid
        raise
    except Exception:
        # A bug, not the client's fault: log it with the id and answer in the client's format
        # (aiohttp's own 500 is plain text). Once the answer has started, only closing is left.
        if request.writer.output_size > 0:
            raise
        log.exception("%s %s %s failed", rid, request.method, escape_controls(request.path))
        return render_for_path(request, ProxyError("internal error in proxygate; see its log"))
    if not response.prepared and not response.headers.get(REQUEST_ID_HEADER):
        response.headers[REQUEST_ID_HEADER] = rid
    return response


def _guarded(request: web.Request) -> web.Response | None:
    """A 403 for a foreign Host (DNS rebinding) or Origin (CSRF), a listed origin's CORS
    preflight, or None: the request goes on."""
    host = request.headers.get("host")  # absent only from hand-made HTTP/1.0, never a browser
    origin = request.headers.get("origin")
    if origin is None and host is not None and _host_name(host) in LOOPBACK_HOSTS:
        return None  # nearly every request: a CLI or SDK on loopback
    settings = request.app[SETTINGS]
    if host is not None and not is_allowed_host(settings, host):
        return _forbidden(request, f"Host {host!r} is not allowed (allowed_hosts)")
    if (
        origin is not None
        and request.path not in UNGUARDED_PATHS
        and not is_allowed_origin(settings, origin, host)
    ):
        return _forbidden(request, f"Origin {origin!r} is not allowed (allowed_origins)")
    if (
        origin is not None
        and request.method == "OPTIONS"
        and "access-control-request-method" in request.headers
        and is_listed_origin(settings, origin)
    ):
        return _cors_preflight(request, origin)
    return None


def _cors_preflight(request: web.Request, origin: str) -> web.Response:
    """A listed origin's page may send JSON and our token headers: say so to its browser (CORS)."""
    asked = request.headers.get("access-control-request-headers", "")
    names = [name.strip() for name in asked.split(",")]
    headers = {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": ", ".join(n for n in names if _HEADER_NAME.fullmatch(n))[:2000],
        "access-control-max-age": str(CORS_MAX_AGE_S),
        "vary": "Origin",
        REQUEST_ID_HEADER: request_id(request),
    }
    return web.Response(status=204, headers=headers)


async def expose_to_listed_origins(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: answers to a listed origin's page are readable by it (CORS)."""
    origin = request.headers.get("origin")
    if origin is None or not is_listed_origin(request.app[SETTINGS], origin):
        return
    response.headers["access-control-allow-origin"] = origin
    response.headers["access-control-expose-headers"] = EXPOSED_HEADERS
    response.headers.add("vary", "Origin")


def _forbidden(request: web.Request, message: str) -> web.Response:
    # Client-chosen text goes into the answer and the log escaped and cut short.
    message = escape_controls(message[:300])
    log_rejection(request, 403, message)
    return render_for_path(request, ClientError(message, status=403, error_class="permission"))


def is_allowed_host(settings: Settings, host: str) -> bool:
    """Loopback names (any port) and ``allowed_hosts``; beyond loopback, any when that is unset."""
    name = _host_name(host)
    allowed = {h.lower() for h in settings.allowed_hosts}
    if name in LOOPBACK_HOSTS or name in allowed or host.strip().lower() in allowed:
        return True
    return not _listens_on_loopback(settings) and not settings.allowed_hosts


def is_allowed_origin(settings: Settings, origin: str, host: str | None) -> bool:
    """An ``allowed_origins`` entry, or our own page: ``http://<the request's allowed Host>``."""
    if is_listed_origin(settings, origin):
        return True
    return host is not None and origin.lower().rstrip("/") == f"http://{host.strip().lower()}"


def is_listed_origin(settings: Settings, origin: str) -> bool:
    origin = origin.lower().rstrip("/")
    return any(origin == listed.lower().rstrip("/") for listed in settings.allowed_origins)


def _host_name(host: str) -> str:
    """``Host`` without its port, lower-cased: ``[::1]:8080`` → ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _listens_on_loopback(settings: Settings) -> bool:
    if settings.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        return False


def _unknown_endpoint(request: web.Request) -> web.Response:
    """A 404 in the client's format, not aiohttp's plain text (for unknown methods too)."""
    error = ProxyError(
        f"no such endpoint: {request.method} {escape_controls(request.path)[:300]}",
        status=404,
        error_class="unknown_endpoint",
    )
    return render_error(client_format(request.path), error, request_id(request))


MIDDLEWARES = (edge,)


# -- errors before routing ----------------------------------------------------------------

# The request is not parsed, so its format is unknown: one body that every SDK reads as an
# error (Anthropic's ``error.type``, OpenAI's ``error.message``/``code``, Gemini's ``status``).
_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is over the size limit"),
    (http_exceptions.BadHttpMethod, "not an HTTP request"),
    (http_exceptions.InvalidURLError, "invalid request target"),
    (http_exceptions.InvalidHeader, "invalid header"),
    (http_exceptions.PayloadEncodingError, "bad body framing (chunked encoding or Content-Length)"),
)


def unparsed_request_error(status: int, exc: BaseException | None) -> tuple[str, bytes]:
    """The message and JSON body for an answer aiohttp gives before routing."""
    if status >= 500:
        kind, code, message = "api_error", "INTERNAL", "internal error in proxygate; see its log"
    else:
        kind, code = "invalid_request_error", "INVALID_ARGUMENT"
        message = next(
            (text for cls, text in _PARSER_ERRORS if isinstance(exc, cls)),
            "malformed HTTP request (bad request line, headers or body framing)",
        )
    body = {"type": "error", "error": {"type": kind, "message": message, "code": status, "status": code}}
    return message, orjson.dumps(body)


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, answering what fails before routing as JSON with a request id."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as the base: part of an answer went, only closing is left
            raise ConnectionError("an answer was partly sent; cannot send an error instead")
        rid = new_request_id()
        text, body = unparsed_request_error(status, exc)
        if status >= 500:
            log.error("%s error handling a request from %s", rid, request.remote, exc_info=exc)
        else:  # a client's mistake (or a probe): one line, no traceback, nothing it sent
            log.info("%s %d from %s: %s", rid, status, request.remote, text)
        headers = {REQUEST_ID_HEADER: rid}
        if status < 500:
            headers["x-should-retry"] = "false"
        response = web.Response(status=status, body=body, content_type="application/json", headers=headers)
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's low-level server making ``EdgeRequestHandler`` connections."""

    def __call__(self) -> web.RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer HTTP parser errors with ``EdgeRequestHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = EdgeServer  # the same server; only how it makes connections changes
        return server
