"""Two threads' `ast.parse` interleaved on purpose, in a process of its own:
`python -m tests.ast_parse_race [--guarded] WAIT_SECONDS` prints "ok" or the error it met;
`--guarded` first loads tests/schemathesis_hooks.py as schemathesis's process does.

Thread A parses a long source; the first collection that starts once A's parse has begun
building AST nodes hands the GIL to thread B, which parses from a deeper stack, and A waits
(at most WAIT_SECONDS) for B to finish. On an affected interpreter (tests/ast_parse_guard.py)
A's parse then fails every time, unless the guard keeps B out until A is done; B is then
still waiting when A's wait runs out, and parses after A.
"""

from __future__ import annotations

import ast
import gc
import sys
import threading
from typing import Any

LONG_SOURCE = "values = [" + ", ".join(f"f(a{i})" for i in range(2000)) + "]\n"


def main(guarded: bool, wait_seconds: float) -> str:
    if guarded:
        import tests.schemathesis_hooks  # noqa: F401  (installs tests/ast_parse_guard.py)
    go, done = threading.Event(), threading.Event()
    errors: list[str] = []
    handed_over = False

    def deeper(levels: int) -> None:
        if levels:
            deeper(levels - 1)
            return
        try:
            ast.parse("y = 1")
        except (SystemError, RecursionError) as exc:
            errors.append(f"B: {type(exc).__name__}: {exc}")

    def thread_b() -> None:
        go.wait()
        deeper(30)
        done.set()

    def during_collection(phase: str, _: dict[str, Any]) -> None:
        nonlocal handed_over
        if handed_over or phase != "start" or threading.current_thread() is not a:
            return
        if any(isinstance(o, ast.AST) for o in gc.get_objects(generation=0)):
            handed_over = True  # A is inside the AST constructor now
            go.set()
            done.wait(wait_seconds)

    def thread_a() -> None:
        try:
            ast.parse(LONG_SOURCE)
        except (SystemError, RecursionError) as exc:
            errors.append(f"A: {type(exc).__name__}: {exc}")

    gc.collect()
    gc.set_threshold(100)
    gc.callbacks.append(during_collection)
    a = threading.Thread(target=thread_a)
    b = threading.Thread(target=thread_b)
    b.start()
    a.start()
    a.join()
    go.set()  # had no collection come, B still runs
    b.join()
    gc.callbacks.remove(during_collection)
    if not handed_over:
        return "no collection inside the parse"
    return "; ".join(errors) or "ok"


if __name__ == "__main__":
    print(main("--guarded" in sys.argv, float(sys.argv[-1])))
