"""How an error reads in one line: what rows, refusals and replies from a worker say of it.

A raised error's message may run to pages (torch's tracebacks inside messages, a user's
print of a tensor); a row, a refusal and the CLI show its first line only, after its type.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message ("" where it has none)."""
    return (str(error).splitlines() or [""])[0]


def one_line(error: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of ``error``, at most ``limit`` characters."""
    return f"{type(error).__name__}: {first_line(error)}"[:limit]
