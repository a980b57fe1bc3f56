"""A local OpenAI-compatible endpoint for tests: a real HTTP server on 127.0.0.1, so a
backend runs its real transport (http.client or the openai client) with no network.

Importable as `fake_openai`: pyproject's pytest `pythonpath` names this folder (not tests/,
whose models/, flows/ and storage/ folders would shadow the real packages)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A request body -> (status, payload), or None to drop the connection without a reply.
Reply = Callable[[dict], "tuple[int, object] | None"]


def chat_completion(request: dict, texts: list[str] | None = None,
                    usage: dict | None = None) -> dict:
    """A 200 chat.completion body for `request`: one choice per text ("reply i" for each of
    the request's `n` by default), with fixed token counts a test can assert on."""
    texts = texts or [f"reply {i}" for i in range(request.get("n", 1))]
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 3 * len(texts),
                           "total_tokens": 0},
    }


class FakeOpenAIEndpoint:
    """Serves every POST with `reply(body)` from the moment it is made; records what it got.

    `url` ends in /v1 (a backend's base_url); `port` 0 picks a free one (pass a stopped
    endpoint's port to bring "the same server" back). A str payload is sent as it is (to send what
    is not JSON), anything else as JSON. One connection per request (HTTP/1.0), so a
    dropped or stopped server is seen by the very next call, not by a kept-alive socket.
    """

    def __init__(self, reply: Reply, *, port: int = 0) -> None:
        self.reply = reply
        self.requests: list[dict] = []  # the JSON bodies, in arrival order
        self.headers: list[dict[str, str]] = []  # their headers, names lower-cased
        self.paths: list[str] = []  # their request targets (a proxy sees absolute URLs)
        self._endpoint_lock = threading.Lock()  # keeps the three lists in step; stop() once
        self._stopped = False
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._endpoint_lock:
                    endpoint.requests.append(body)
                    endpoint.headers.append({k.lower(): v for k, v in self.headers.items()})
                    endpoint.paths.append(self.path)
                answer = endpoint.reply(body)
                if answer is None:  # hang up unanswered, as a server going down does
                    self.close_connection = True
                    return
                status, payload = answer
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.handle_error = lambda *args: None  # a client that timed out hung up
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket: from then on, connection refused. Idempotent
        (a test may stop it mid-run and its fixture again at the end)."""
        with self._endpoint_lock:
            if self._stopped:
                return
            self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
