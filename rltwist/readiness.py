"""How a process rltwist starts says that it is ready: on a pipe, not in its log.

The launcher (``rltwist.launcher.ChildProcess``) gives the child the write end of a pipe
as descriptor ``READY_FD`` and names it in ``RLTWIST_READY_FD``. The child writes one
JSON line there once it serves (its ports are open and its reactor runs), then closes it.
A log line can be reworded, buffered or imitated by anything the process logs; the pipe
says exactly one thing, once.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

READY_FD_ENV = "RLTWIST_READY_FD"
#: the child's descriptor for the pipe (0-2 are stdin, stdout, stderr)
READY_FD = 3


def notify_ready(info: dict[str, Any], environ: dict[str, str] | None = None) -> bool:
    """Tell the process that started this one that it is ready: *info* as one JSON line
    on the pipe named by ``RLTWIST_READY_FD``, which is then closed. Nothing happens when
    the variable is unset or does not name a pipe (a process started by hand). True if
    written."""
    env = os.environ if environ is None else environ
    value = env.pop(READY_FD_ENV, None)  # not inherited by anything this process starts
    if value is None or not value.isdigit():
        return False
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.write(fd, json.dumps(info).encode() + b"\n")
        os.close(fd)
    except OSError:
        return False
    return True
