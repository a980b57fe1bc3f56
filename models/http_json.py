"""JSON over keep-alive HTTP/1.1 with the standard library's `http.client`, a connection per thread.

Why not the openai client on the hot path: a harness serving 32 concurrent workflows from one
process spends its GIL on the client's request building and responses (1.9 ms of CPU per call
under that load here, against 0.4-0.5 ms for `http.client`: benchmarks/bench_http_transport.py),
and every millisecond of that queues the other calls. Proxies from HTTP(S)_PROXY / NO_PROXY
are honoured as urllib does.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from typing import Any

from w4s.cancel import CancelScope, current_scope

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class HTTPStatusError(Exception):
    """The server answered with a status >= 400."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"Error code: {status} - {message}")
        self.status_code = status
        self.retry_after = retry_after


class HTTPUnreachable(Exception):
    """No answer: refused, reset, or timed out."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class JSONClient:
    """POSTs JSON to `base_url` + path; thread-safe, each thread keeps its own connection."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout_s: float) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"`base_url` must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         **headers}
        # a proxy cannot reach this machine's loopback, whatever NO_PROXY says
        local = self._host in ("localhost", "::1") or self._host.startswith("127.")
        self._proxy = None if local or urllib.request.proxy_bypass(self._host) else (
            urllib.request.getproxies().get(url.scheme))
        self._proxy_headers: dict[str, str] = {}
        if self._proxy:
            proxy = urllib.parse.urlsplit(self._proxy)
            if proxy.username:
                user = urllib.parse.unquote(proxy.username)
                password = urllib.parse.unquote(proxy.password or "")
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                self._proxy_headers["Proxy-Authorization"] = f"Basic {token}"
            if not self._https:  # a plain-HTTP proxy reads them on every request
                self._headers.update(self._proxy_headers)
        self._ssl = ssl.create_default_context() if self._https else None
        self._local = threading.local()

    def post(self, path: str, body: dict, *, json_reply: bool = True) -> Any:
        """The decoded JSON reply (the text with `json_reply=False`: vLLM's adapter endpoints
        answer plain text); HTTPStatusError / HTTPUnreachable otherwise.

        Under a `w4s.cancel` scope that is cancelled meanwhile, the request's socket is shut
        at once (the server sees its client go: llama.cpp and vLLM stop generating) and
        `Cancelled` is raised."""
        data = json.dumps(body).encode()
        scope = current_scope()
        for attempt in range(2):  # a kept-alive connection the server closed is reopened once
            conn, reused = self._connection()
            try:
                resp, payload = self._exchange(conn, path, data, scope)
            except _STALE as e:
                self._drop()
                _check(scope)
                if reused and attempt == 0:
                    continue
                raise HTTPUnreachable(f"connection lost: {type(e).__name__}: {e}",
                                      timed_out=False) from e
            except TimeoutError as e:
                self._drop()
                raise HTTPUnreachable(f"no reply within {self.timeout_s:g}s",
                                      timed_out=True) from e
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                _check(scope)
                raise HTTPUnreachable(f"{type(e).__name__}: {e}", timed_out=False) from e
            except BaseException:
                self._drop()  # Cancelled (or an interrupt): the connection is unusable
                raise
            if resp.status >= 400:
                raise HTTPStatusError(resp.status, _error_message(payload),
                                      _retry_after(resp.getheader("retry-after")))
            if not json_reply:
                return payload.decode("utf-8", "replace")
            try:
                return json.loads(payload)
            except ValueError as e:
                raise ValueError(f"reply is not JSON: {payload[:80]!r}") from e
        raise AssertionError("unreachable")

    def _exchange(self, conn: http.client.HTTPConnection, path: str, data: bytes,
                  scope: CancelScope | None) -> tuple[http.client.HTTPResponse, bytes]:
        if scope is None:
            conn.request("POST", self._target(path), data, self._headers)
            resp = conn.getresponse()
            return resp, resp.read()
        scope.check()
        if conn.sock is None:
            conn.connect()  # so a cancel always finds a socket to shut
        with scope.on_cancel(lambda: _shut(conn)):
            conn.request("POST", self._target(path), data, self._headers)
            resp = conn.getresponse()
            payload = resp.read()
        scope.check()  # cancelled as the reply arrived: the caller has gone all the same
        return resp, payload

    def _target(self, path: str) -> str:
        target = self._prefix + path
        if self._proxy and not self._https:  # a plain-HTTP proxy takes the absolute URL
            return f"http://{self._host}:{self._port}{target}"
        return target

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self._proxy:
            proxy = urllib.parse.urlsplit(self._proxy)
            host, port = proxy.hostname or "", proxy.port or 80
        else:
            host, port = self._host, self._port
        if self._https:
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout_s,
                                               context=self._ssl)
            if self._proxy:
                conn.set_tunnel(self._host, self._port, headers=self._proxy_headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
        self._local.conn = conn
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def _shut(conn: http.client.HTTPConnection) -> None:
    """Wake the thread blocked on `conn` (from another thread): its read ends at once."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _check(scope: CancelScope | None) -> None:
    if scope is not None:
        scope.check()


def _error_message(payload: bytes) -> str:
    """The server's own error text: OpenAI's {"error": {"message"}}, vLLM's, or the raw body."""
    try:
        body = json.loads(payload)
    except ValueError:
        return payload[:300].decode("utf-8", "replace")
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)
    return str(body)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
