"""One `ast.parse` at a time, on the interpreters where two at once can fail.

CPython 3.11 before 3.11.8 and 3.12 before 3.12.2 keep the AST constructor's recursion counter
in state shared by every thread, and each `ast.parse` resets it to its own thread's depth
(CPython gh-106905). When a collection inside one parse runs Python code (a finalizer, a
`gc.callbacks` entry) and the GIL passes to a thread that parses too, the first parse then
fails with "SystemError: AST constructor recursion depth mismatch" (or, more rarely, a false
RecursionError). Hypothesis parses lambda sources as it builds strategies, and schemathesis
runs two workers in threads (tests/test_api_schema.py), so its process installs this guard
(tests/schemathesis_hooks.py). A fixed interpreter gets nothing installed.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

AFFECTED = (3, 11) <= sys.version_info[:3] < (3, 11, 8) or (
    (3, 12) <= sys.version_info[:3] < (3, 12, 2)
)


def install() -> bool:
    """Serialize `ast.parse` in this process if the interpreter needs it; True if it did."""
    if not AFFECTED or getattr(ast.parse, "_one_at_a_time", False):
        return False
    parse = ast.parse
    lock = threading.RLock()  # a finalizer run inside a parse may parse: no deadlock

    @functools.wraps(parse)
    def parse_alone(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return parse(*args, **kwargs)

    parse_alone._one_at_a_time = True  # type: ignore[attr-defined]
    ast.parse = parse_alone
    return True
