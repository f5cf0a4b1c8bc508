"""What every request to the backend passes before any route sees it: the host, origin, token and upload-size
checks (``RequestGuard``), the bind check that keeps a token-less server on this machine, and the access-log filter
that keeps tokens out of logs. Each refusal is a JSON ``detail`` that says what to do.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

TOKEN_COOKIE = "cinepregen_token"
MIN_TOKEN_LENGTH = 16
_MAX_DRAIN_BYTES = 64 * 2**20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Only this machine may use a backend without a token, and a token must be long enough not to be guessed."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host!r} without a token: anyone who can reach this machine could use the "
            "backend. Pass --token-file FILE (clients then send 'Authorization: Bearer TOKEN'), or bind 127.0.0.1."
        )
    if token is not None and len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the token is {len(token.strip())} characters; use at least {MIN_TOKEN_LENGTH} (for example "
                         "`python -c \"import secrets; print(secrets.token_urlsafe(24))\"`)")


class _BodyTooLarge(Exception):
    pass


def host_of(value: str) -> str:
    """The host part of a Host header or an Origin's authority (``[::1]:8765`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """ASGI middleware that runs before any body is read, in this order:

    1. **Host** (DNS rebinding): without a token only loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``) and
       ``allowed_hosts`` are served; a page on ``evil.example`` that re-points its name at 127.0.0.1 is refused.
    2. **Origin** (cross-site requests): a request that changes something (POST, DELETE, PUT, PATCH) from a web page
       of another origin is refused, token or not; clients that are not browsers send no Origin. No CORS headers are
       ever sent, so no other page can read an answer either.
    3. **Token** (401) when the server has one.
    4. **Upload size**: POST /v1/jobs needs a Content-Length within the limit and no Transfer-Encoding (411/413),
       and every request's body is counted as it is read, so no header can get more than the limit past it.
    5. **Stalled uploads**: a body that sends nothing for ``stall_seconds`` is answered 408 and its connection
       closed (uvicorn waits for a body forever: a laptop that drops off the network mid-upload, or a client that
       trickles, would hold the connection and the upload's spooled file until the server stops).

    HEAD requests (``curl -I``, uptime monitors) are routed as GET; the HTTP server sends the head only.
    """

    def __init__(self, app: Callable, token: str | None, max_upload_bytes: int, allowed_hosts: tuple[str, ...] = (),
                 stall_seconds: float = 60.0):
        self.app = app
        self.token = token
        self.max_upload_bytes = max_upload_bytes
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.stall_seconds = stall_seconds

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "HEAD":  # routed as GET (FastAPI answers HEAD 405); the server drops the body itself
            scope = {**scope, "method": "GET"}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._origin_problem(scope, headers)
        if problem:
            drained = await _receive_and_drop(receive, headers, self.stall_seconds)
            return await _send_json(send, 403, problem, close=not drained)
        if self.token:
            problem, from_query = self._token_problem(scope, headers)
            if problem:
                drained = await _receive_and_drop(receive, headers, self.stall_seconds)
                return await _send_json(send, 401, problem, [(b"www-authenticate", b"Bearer")], close=not drained)
            if from_query:
                send = _with_cookie(send, self.token)
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/jobs":
            length = headers.get("content-length")
            if "transfer-encoding" in headers or length is None or not length.isdigit():
                await _receive_and_drop(receive, headers, self.stall_seconds)
                message = ("the upload needs a Content-Length header and no Transfer-Encoding "
                           "(chunked uploads are refused)")
                return await _send_json(send, 411, message, close=True)
            if int(length) > self.max_upload_bytes:
                await _receive_and_drop(receive, headers, self.stall_seconds)
                message = (
                    f"the upload is {int(length):,} bytes; this server accepts at most {self.max_upload_bytes:,} "
                    "bytes (cinepregen serve --max-upload-mb)"
                )
                return await _send_json(send, 413, message, close=True)
        started = stalled = body_done = False

        async def counted_receive() -> dict:
            nonlocal stalled, body_done
            if body_done:  # later receives wait for a disconnect while a response streams: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_seconds)
            except TimeoutError:
                if not started:
                    await _send_json(send, 408, f"the upload stalled: nothing arrived for {self.stall_seconds:g} s; "
                                                "send it again", close=True)
                stalled = body_done = True
                return {"type": "http.disconnect"}  # the route gives up as if the client had gone
            body_done = message["type"] != "http.request" or not message.get("more_body")
            counted_receive.total += len(message.get("body", b""))
            if counted_receive.total > self.max_upload_bytes:
                raise _BodyTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if stalled:  # the 408 went out: whatever the route answers after the disconnect is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        counted_receive.total = 0
        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"the request body is over this server's limit of "
                                             f"{self.max_upload_bytes:,} bytes", close=True)

    def _token_problem(self, scope: dict, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(what is wrong or None, whether the token came from ``?token=`` on the board)."""
        offered = None
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, offered = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return "the Authorization header must be 'Bearer <token>'", False
        from_query = False
        if offered is None and scope["path"] == "/":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            offered, from_query = (query[0], True) if query else (None, False)
        if offered is None and "cookie" in headers:
            morsel = SimpleCookie(headers["cookie"]).get(TOKEN_COOKIE)
            offered = morsel.value if morsel else None
        if offered is None:
            return "this backend needs a token: send 'Authorization: Bearer <token>'", False
        if not hmac.compare_digest(offered.strip().encode(), self.token.encode()):
            return "wrong token", False
        return None, from_query

    def _origin_problem(self, scope: dict, headers: dict[str, str]) -> str | None:
        host = host_of(headers.get("host", ""))
        if not self.token and not (is_loopback(host) or host in self.allowed_hosts):
            return (f"this backend serves only this machine (Host {host[:64]!r} is not a loopback name); "
                    "add the name with cinepregen serve --allow-host, or use 127.0.0.1")
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = headers.get("origin")
        if origin == "null":
            return "requests from pages without an origin (sandboxed frames, files) are refused"
        other_site = origin is not None and origin.split("://", 1)[-1].lower() != headers.get("host", "").lower()
        if other_site or headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "requests from another web site's pages are refused (cross-origin); use the add-on or the board"
        return None


async def _receive_and_drop(receive: Callable, headers: dict[str, str], stall_seconds: float) -> bool:
    """Read (and discard) a refused request's body, up to a cap, so the client gets the answer instead of a reset;
    whether all of it was read (if not, the answer must close the connection). A body declared larger than the cap
    is not waited for, nor one that stalls."""
    length = headers.get("content-length", "0")
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if not chunked and (not length.isdigit() or int(length) > _MAX_DRAIN_BYTES):
        return False
    received = 0
    while received < _MAX_DRAIN_BYTES:
        if not chunked and received >= int(length):
            return True
        try:
            message = await asyncio.wait_for(receive(), stall_seconds)
        except TimeoutError:
            return False
        received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return True
    return False


async def _send_json(send: Callable, status: int, detail: str, extra_headers: list | None = None,
                     close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the body was not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def _with_cookie(send: Callable, token: str) -> Callable:
    cookie = f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode()

    async def send_with_cookie(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return send_with_cookie


class _RedactTokens(logging.Filter):
    """Access-log lines carry the request path; a board opened as ``/?token=...`` must not leave its token there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(re.sub(r"token=[^&\s]*", "token=<redacted>", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def redact_tokens_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in access.filters):
        access.addFilter(_RedactTokens())
