"""What every request to the web app passes before a route sees it.

A local server for medical images must be safe to leave running while its user browses the web.
Any page the browser shows can send a form POST to ``127.0.0.1`` (a multipart upload needs no
CORS preflight) and, by DNS rebinding (its own name re-pointed at 127.0.0.1), read the answers.
So :class:`Guard`, a plain ASGI middleware outside every route:

- answers only to the names it was given (the loopback names, ``--host``, ``--allow-host``):
  a rebinding page's ``Host`` is its own name, so it gets 400 and nothing else;
- refuses writes from another origin (403): a POST whose ``Origin`` is not this server's, or
  whose ``Sec-Fetch-Site`` is not ``same-origin``; clients without these headers (curl, scripts)
  are not browsers driven by a page and pass;
- refuses reads that another site embeds (an ``<img>`` of an example scan): a cross-site or
  same-site GET passes only as a top-level navigation (a link to the app);
- counts the body's bytes as they arrive and answers 413 once past the ceiling (a chunked upload
  declares no length), and 408 when no byte came for ``idle_seconds`` or the whole body has not
  arrived within ``body_seconds`` (stalled or trickling uploads would otherwise hold their
  connections);
- puts the security headers on every response, refusals and 500s included.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
#: The names a loopback server answers to when given no others.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_OWN_SITE = (None, "same-origin", "none")  # "none": the user typed the address


class Refused(Exception):
    """A request answered with ``status`` and a one-line ``message`` before (or while) the route
    reads it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def served_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names a server bound to ``host`` answers to: the loopback names, ``host`` itself
    (unless it is a wildcard address) and ``extra``, lower-case and without IPv6 brackets."""
    names = [*LOOPBACK, *([] if host in WILDCARDS else [host]), *extra]
    cleaned = [name.strip().strip("[]").lower() for name in names]
    return list(dict.fromkeys(name for name in cleaned if name))


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header (``[::1]:8000`` -> ``::1``), or None if it is not one."""
    if not header or any(c in header for c in "@/\\?# \t"):
        return None
    try:
        parts = urlsplit("//" + header)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return None
    return parts.hostname


class Guard:
    """The ASGI middleware described in the module docstring.

    ``hosts`` are the names served (:func:`served_names`); ``max_body`` the most bytes a request
    body may hold, ``body_seconds`` how long it may take to arrive, ``idle_seconds`` the longest
    wait for its next bytes, ``limit_text`` the limit in words for the 413's message.
    """

    def __init__(
        self,
        app: ASGIApp,
        hosts: Iterable[str],
        max_body: int,
        body_seconds: float,
        idle_seconds: float,
        limit_text: str,
    ) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self.max_body = max_body
        self.body_seconds = body_seconds
        self.idle_seconds = idle_seconds
        self.limit_text = limit_text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            headers = Headers(scope=scope)
            self._check_host(headers)
            _check_origin(scope, headers)
            self._check_declared_length(headers)
            await self.app(scope, self._bounded(receive), send_with_headers)
        except Refused as refusal:
            if started:
                raise
            await _answer(send_with_headers, refusal.status, refusal.message)
        except Exception:
            if not started:  # a 500 with the headers; the server still logs the traceback
                await _answer(send_with_headers, 500, "internal error (see the server's log)")
            raise

    def _check_host(self, headers: Headers) -> None:
        if len(headers.getlist("host")) > 1:  # which one a proxy or the route reads is unclear
            raise Refused(400, "more than one Host header")
        header = headers.get("host")
        if host_name(header) not in self.hosts:
            raise Refused(
                400,
                f"host '{header}' is not a name this server answers to "
                f"({', '.join(sorted(self.hosts))}; add one with --allow-host)",
            )

    def _check_declared_length(self, headers: Headers) -> None:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise Refused(
                413, f"request of {int(declared) / 2**20:.1f} MB is over the limit "
                f"({self.limit_text})",
            )  # fmt: skip

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` counting the body's bytes and bounded by the body's deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_seconds
        received, complete = 0, False

        async def bounded() -> Message:
            nonlocal received, complete
            if complete:  # after the body, only a disconnect can come: no deadline
                return await receive()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(min(left, self.idle_seconds), 0))
            except TimeoutError:
                if left > self.idle_seconds:
                    why = f"no data for {self.idle_seconds:g} s"
                else:
                    why = f"not all there after {self.body_seconds:g} s"
                raise Refused(408, f"the request's body stalled ({why}): send it again") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise Refused(
                        413, f"request over the limit ({self.limit_text}): stopped reading at "
                        f"{received / 2**20:.1f} MB",
                    )  # fmt: skip
            return message

        return bounded


def _check_origin(scope: Scope, headers: Headers) -> None:
    """403 for a write from another origin, or a non-navigation read embedded by another site."""
    site = headers.get("sec-fetch-site")
    if scope["method"] in _SAFE_METHODS:
        navigation = headers.get("sec-fetch-mode") == "navigate"
        if site not in _OWN_SITE and not navigation:
            raise Refused(403, f"a {site} page may not read {scope['path']}")
        return
    own = f"{scope['scheme']}://{headers.get('host', '')}".lower()
    origin = headers.get("origin")
    if origin is not None and origin.lower() != own:
        raise Refused(403, f"{scope['method']} from {origin}: only this server's page may send")
    if site not in _OWN_SITE:
        raise Refused(403, f"{scope['method']} from a {site} page: only this server's page may")


async def _answer(send: Send, status: int, message: str) -> None:
    """A one-line JSON answer that closes the connection: the rest of a refused body is never
    read (uvicorn would otherwise keep reading it, to reuse the connection)."""
    body = json.dumps({"detail": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
