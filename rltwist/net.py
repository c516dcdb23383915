"""What every listening socket of rltwist shares: its accept backlog, and the kernel's
count of connections dropped because a backlog was full.

Twisted's default backlog is 50. A burst of new connections larger than that (200 bots
logging in at once, each login asking the SDK over a new HTTP connection; a scrape of many
targets; a region's nodes all connecting at start) overflows the accept queue: the kernel
drops the SYN and the client retries after its 1 s retransmit timeout, which shows up as a
1 s tail in every latency figure. The kernel caps any backlog at
``net.core.somaxconn`` (4096 on current Linux).
"""

from __future__ import annotations

from pathlib import Path

#: the SDK, GM, metrics and cluster listeners
LISTEN_BACKLOG = 1024
#: game client listeners (login, role): a login storm opens thousands of connections
CLIENT_BACKLOG = 4096


def listen_overflows() -> int | None:
    """The kernel's ``TcpExt ListenOverflows`` counter for this network namespace (what
    ``nstat TcpExtListenOverflows`` shows), or None where /proc/net/netstat is missing."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            if "ListenOverflows" in row:
                return int(row["ListenOverflows"])
    return None
