"""Instructions per cluster operation, counted by valgrind: a load-independent check that a
change does not cost the hot paths (bench/rpc.py's rates swing by 20 % on a shared machine).

    python bench/rpc_cost.py                       # this checkout
    python bench/rpc_cost.py --compare ../base     # side by side with another checkout

Each probe runs in a fresh process under ``valgrind --tool=callgrind``, which counts only
inside the measured loop (the loop runs inside ``functools.reduce``, a C function nothing
else in the process calls, given to ``--toggle-collect``). Two in-process clusters a and b
are linked over loopback TCP; the loop then runs without reactor turns:

* ``send``:  ``a.send`` of 50 bytes, 100 at a time, after which the transport is emptied
  by hand (as if it had drained) -- Cluster.send, the sender, Twisted's write;
* ``call``:  ``a.call`` of 50 bytes, 100 at a time, then the 100 replies are fed to a's
  link -- the call and reply paths of the caller, Deferred included;
* ``call_loop``: bench/rpc.py's ``call x100`` pattern: 100 calls outstanding, and each
  reply's callback makes the next call; per round the 100 replies are fed to a's link at
  once (so the calls are made while one read's replies are handled), then the transport
  is emptied -- the same paths as ``call``, plus whatever a read does once for all the
  calls made while it is handled;
* ``serve_call`` / ``serve_send``: 100 call (send) frames fed to b's agent link at once --
  decoding, dispatch, the handler, encoding and writing the replies.

Emptying a transport by hand touches Twisted's private buffer attributes; that is only
done here, to keep the loop free of reactor turns.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
from typing import Any

PROBES = ("send", "call", "call_loop", "serve_call", "serve_send")
N = 20_000
PAYLOAD = b"x" * 50


def probe(what: str, n: int) -> None:
    """Run one probe in this process (the child side of ``main``)."""
    from twisted.internet import defer, reactor, task

    from rltwist.cluster import Cluster, Service, handler
    from rltwist.cluster.link import CALL, REPLY, SEND, pack
    from rltwist.config import ClusterSettings
    from rltwist.launcher import free_ports

    class Echo(Service):
        name = "echo"

        @handler
        def note(self, *values: Any) -> None:
            pass

        @handler
        def ping(self, value: Any) -> Any:
            return value

    pa, pb = free_ports(2)
    settings = ClusterSettings(secret=b"rpc-cost-secret!")
    a = Cluster("a", settings, {"b": ("127.0.0.1", pb)}, listen=("127.0.0.1", pa))
    b = Cluster("b", settings, {"a": ("127.0.0.1", pa)}, listen=("127.0.0.1", pb))
    b.register(Echo())
    a.startService()
    b.startService()

    def empty(transport: Any) -> None:
        transport._tempDataBuffer = []
        transport._tempDataLen = 0
        transport.dataBuffer = b""
        transport.offset = 0

    def drained(sender: Any) -> None:
        # as if the transport had written everything: emptied, and told (if it asks)
        empty(sender.link.transport)
        if hasattr(sender, "drained"):
            sender.drained(sender.link)

    def loop() -> None:
        sender = a.senders["b"]
        if what == "send":
            for _ in range(n // 100):
                for _ in range(100):
                    a.send("b", "echo", "note", "bench", PAYLOAD)
                drained(sender)
        elif what == "call":
            got: list[Any] = []
            for _ in range(n // 100):
                first = sender._session + 1
                for _ in range(100):
                    a.call("b", "echo", "ping", PAYLOAD).addCallback(got.append)
                drained(sender)
                sender.link.dataReceived(b"".join(
                    pack((REPLY, s, PAYLOAD)) for s in range(first, first + 100)))
            assert len(got) == n, len(got)
        elif what == "call_loop":
            done = [0]

            def again(_: Any) -> None:
                done[0] += 1
                a.call("b", "echo", "ping", PAYLOAD).addCallback(again)

            first = sender._session + 1
            for _ in range(100):
                a.call("b", "echo", "ping", PAYLOAD).addCallback(again)
            for _ in range(n // 100):
                drained(sender)
                sender.link.dataReceived(b"".join(
                    pack((REPLY, s, PAYLOAD)) for s in range(first, first + 100)))
                first += 100
            assert done[0] == n, done[0]
        else:
            agent = next(iter(b.agent_links))
            if what == "serve_call":
                chunk = b"".join(pack((CALL, i, "echo", "ping", [PAYLOAD])) for i in range(100))
            else:
                chunk = b"".join(pack((SEND, "echo", "note", ["bench", PAYLOAD]))
                                 for _ in range(100))
            for _ in range(n // 100):
                agent.dataReceived(chunk)
                empty(agent.transport)

    async def run() -> None:
        try:
            await a.call("b", "echo", "ping", 1)  # the link is up, both ways warmed
            a.send("b", "echo", "note", 1)
            await a.call("b", "echo", "ping", 1)
            # Resumed here by a reply's callback, that is inside a's link handling a read:
            # leave it first, so the loop runs as code driven by a timer or another
            # connection does (a sender collects what is written during a read).
            await task.deferLater(reactor, 0, lambda: None)
            functools.reduce(lambda _x, _y: loop(), [0, 1])  # counted: inside reduce only
        finally:
            reactor.stop()

    defer.ensureDeferred(run())
    reactor.run()


def count(root: str, what: str, n: int) -> float:
    """Instructions per operation of probe *what* with the rltwist package under *root*."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.path.abspath(root))
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", "--toggle-collect=functools_reduce",
         "--callgrind-out-file=/dev/null", sys.executable, os.path.abspath(__file__),
         "--child", what, "-n", str(n)],
        env=env, capture_output=True, text=True, timeout=900)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode or not m:
        raise SystemExit(f"probe {what} under {root} failed:\n{r.stdout}\n{r.stderr[-2000:]}")
    return int(m.group(1)) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", metavar="CHECKOUT", help="another checkout to count too")
    p.add_argument("--probes", default=",".join(PROBES), help="comma-separated subset")
    p.add_argument("-n", type=int, default=N, help=f"operations per probe (default {N})")
    p.add_argument("--child", metavar="PROBE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        probe(args.child, args.n)
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = [here] + ([args.compare] if args.compare else [])
    print("instructions per operation (valgrind callgrind)")
    print(f"{'probe':12}" + "".join(f"{os.path.basename(os.path.abspath(r)):>14}" for r in roots)
          + ("      change" if args.compare else ""))
    for what in args.probes.split(","):
        counts = [count(r, what, args.n) for r in roots]
        line = f"{what:12}" + "".join(f"{c:14.0f}" for c in counts)
        if args.compare:
            line += f"  {(counts[0] / counts[1] - 1) * 100:+9.1f} %"
        print(line, flush=True)


if __name__ == "__main__":
    main()
