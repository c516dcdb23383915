"""One-line descriptions of exceptions for reports sent to master and GM tools."""

from __future__ import annotations

import traceback

__all__ = ["describe_exception"]


def describe_exception(exc: BaseException) -> str:
    """Say what went wrong and where in one line: ``Type: message (file, line n)``."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return text
