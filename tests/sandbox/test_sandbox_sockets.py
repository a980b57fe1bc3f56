"""Local sockets: a job cannot reach a unix socket a host process listens on."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from w4s.sandbox import isolation_report

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")

PROBE = '''
import socket

def solver(agent, task):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(task)
        s.sendall(b"hello from the jail")
        return {"answer": "connected"}
    except OSError as e:
        return {"answer": f"refused: {type(e).__name__}"}
'''

@pytest.fixture
def listener(request):
    """A host process listening on a mode-777 unix socket in `request.param`; yields
    (path, list of what it received)."""
    folder = Path(request.param)
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    path = folder / f"w4s-test-{os.getpid()}-{threading.get_ident()}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(8)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(100))
                except OSError:
                    received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(path), received
    stop.set()
    thread.join(2)
    server.close()
    path.unlink(missing_ok=True)

@pytest.mark.parametrize("listener", ["/var/tmp", "/tmp"], indirect=True)
def test_a_job_cannot_connect_to_a_host_unix_socket(hostile_harness, listener):
    from w4s.benchmarks.base import Item

    path, received = listener
    report = isolation_report()
    if report["level"] != "strong":
        pytest.skip("unix sockets are denied at the strong level only")
    item = Item(id="s", question=path, gold="")
    out = hostile_harness.evaluate(PROBE, [item], None).outcomes[0]
    assert out.answer is not None and out.answer.startswith("refused"), (out.answer, out.error)
    assert received == []

def test_socketpairs_and_nested_programs_still_work(hostile_harness, make_bench):
    code = '''
import socket

def solver(agent, task):
    a, b = socket.socketpair()
    a.sendall(b"pair")
    got = b.recv(4).decode()
    return {"answer": got + agent.execute_code("def solution():\\n    return 1\\n")}
'''
    bench = make_bench(1)
    out = hostile_harness.evaluate(code, bench.load(), bench).outcomes[0]
    assert out.answer == "pair1", out.error

def test_the_report_says_unix_sockets_are_denied():
    report = isolation_report()
    assert "unix_sockets_denied" in report
    if report["level"] == "strong":
        assert report["unix_sockets_denied"]
