"""The solution process (S): runs only the answer's code, then serves calls to its functions.

It never sees a test: the test process (T, see `tester`) sends it calls as plain data and
rebuilds the replies itself (`plain`), so a pass never depends on anything S can rig.
"""

from __future__ import annotations

import linecache
import socket
import types
from typing import Any

from .framing import FrameChannel, send_frame
from .plain import NotPlain, Ref, decode, encode
from .seeding import seed_random
from .text import clip, error_text

SOLUTION_FILE = "<solution>"
MUTABLE = (list, dict, set)


def serve_solution(sock: socket.socket, source: str, limit: int) -> None:
    """Exec `source`, say which names it defines, then answer calls until T hangs up."""
    chan = FrameChannel(sock)
    linecache.cache[SOLUTION_FILE] = (len(source), None, source.splitlines(True),
                                      SOLUTION_FILE)
    seed_random(source)
    glb: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, SOLUTION_FILE, "exec"), glb)  # noqa: S102 - jailed
    except BaseException as e:  # noqa: BLE001 - a broken solution is its own result
        chan.send({"op": "ready", "error": error_text(e, limit)})
        return
    names = [k for k, v in list(glb.items()) if callable(v) and not k.startswith("__")]
    modules = {k: v.__name__ for k, v in list(glb.items())
               if isinstance(v, types.ModuleType) and isinstance(v.__name__, str)}
    chan.send({"op": "ready", "names": names, "modules": modules})
    objects: dict[int, Any] = {}

    def ref(obj: Any) -> int:
        objects[len(objects)] = obj
        return len(objects) - 1

    def resolve(x: Any) -> Any:
        t = type(x)
        if t is Ref:
            if x.id not in objects:
                raise NotPlain(f"unknown reference {x.id}")
            return objects[x.id]
        if t is list:
            return [resolve(v) for v in x]
        if t is tuple:
            return tuple(resolve(v) for v in x)
        if t is dict:
            return {resolve(k): resolve(v) for k, v in x.items()}
        return x

    while True:
        try:
            req = chan.recv()
        except (EOFError, OSError):
            return
        try:
            fn = glb[str(req["name"])]
            args = [resolve(decode(a)) for a in req["args"]]
            kwargs = {str(k): resolve(decode(v)) for k, v in req["kwargs"].items()}
            value = fn(*args, **kwargs)
            reply = {"value": encode(value, ref),
                     "args": [encode(a, ref) if type(a) in MUTABLE else None for a in args]}
        except BaseException as e:  # noqa: BLE001 - raised by the solution: T re-raises
            reply = {"raise": type(e).__name__, "message": clip(_message(e), 500)}
        chan.send(reply)


def _message(e: BaseException) -> str:
    try:
        return str(e)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return ""


_REHEARSAL = ("from typing import List\n\n\ndef f(xs: List[int], k) -> List[int]:\n"
              "    return [x * k for x in xs]\n")


def rehearse() -> None:
    """Serve a trivial solution once in the zygote itself (nothing is sent anywhere): the
    code on that path is then warm (quickened) in the zygote's memory, so each S forked
    later writes to, and so copies, fewer of its pages."""
    ours, theirs = socket.socketpair()
    try:
        for k in range(3):
            send_frame(ours, {"name": "f", "args": [["l", [["i", "0x1"], "a"]], ["i", hex(k)]],
                              "kwargs": {}})
        ours.shutdown(socket.SHUT_WR)
        serve_solution(theirs, _REHEARSAL, 1000)
    finally:
        ours.close()
        theirs.close()
        linecache.cache.pop(SOLUTION_FILE, None)
