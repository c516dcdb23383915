"""CPU cost of the server side of a client port (login node, role gateway), in-process.

    python bench/clientport.py [--quick] [--runs N] [--json PATH]

What a node pays per client connection and per request in ``rltwist.protocols.server``,
bounds included (handshake and frame deadlines, requests in flight, the outbound-buffer
producer, the connection caps' counting): no network, no node behind it, so the figures
are the protocol layer alone and move little with the machine's load.

* ``connection``: accept (the factory builds the protocol and counts it), connect, one
  ``Login`` frame decoded and answered, the handshake done, the connection lost.
* ``request``: one ``Heartbeat`` frame decoded and answered on an open connection.
* ``pipelined``: 16 ``Heartbeat`` frames in one read, each answered (per request).

Each row is the best (lowest) of ``--runs`` runs of N operations, in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltwist.protocols import ServerProtocol, ServerProtocolFactory, encode_request, pb

ADDR = IPv4Address("TCP", "10.0.0.1", 40000)
LOGIN = encode_request(pb.Login(openid="o" * 20, token="t" * 64, server_id=1,
                                version="1.2"), 1)
LOGIN_OK = pb.Login.Response(code=pb.ErrorCode.OK, userid=1 << 16 | 1, host="127.0.0.1",
                             port=7000, secret="s" * 32)
HEARTBEAT = encode_request(pb.Heartbeat(), 7)
HEARTBEAT_OK = pb.Heartbeat.Response(code=pb.ErrorCode.OK, server_time_ms=1)


class Transport(StringTransport):
    """StringTransport with the attribute of Twisted's TCP transport the bound sets."""

    bufferSize = 65536


def answer_login(protocol: ServerProtocol, message: Any, session: int) -> None:
    protocol.handshakeDone()
    protocol.reply(session, LOGIN_OK)


def answer_heartbeat(protocol: ServerProtocol, message: Any, session: int) -> None:
    protocol.reply(session, HEARTBEAT_OK)


def connection_op() -> Callable[[], None]:
    factory = ServerProtocolFactory(answer_login, clock=Clock())

    def op() -> None:
        protocol = factory.buildProtocol(ADDR)
        assert protocol is not None
        protocol.makeConnection(Transport(peerAddress=ADDR))
        protocol.dataReceived(LOGIN)
        protocol.connectionLost(None)  # type: ignore[arg-type]

    return op


def request_op(batch: int) -> Callable[[], None]:
    factory = ServerProtocolFactory(answer_heartbeat, clock=Clock())
    protocol = factory.buildProtocol(ADDR)
    assert protocol is not None
    transport = Transport(peerAddress=ADDR)
    protocol.makeConnection(transport)
    protocol.handshakeDone()
    data = HEARTBEAT * batch

    def op() -> None:
        protocol.dataReceived(data)
        transport.clear()

    return op


def measure(op: Callable[[], None], n: int, runs: int, per: int = 1) -> float:
    """Best of *runs* runs of *n* calls of *op*, in microseconds per unit (*per* units
    per call)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(n):
            op()
        best = min(best, (time.perf_counter() - started) / (n * per))
    return best * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer operations (a few seconds)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args()
    n = 20_000 if args.quick else 200_000
    rows = [
        {"row": "connection", "us": measure(connection_op(), n, args.runs)},
        {"row": "request", "us": measure(request_op(1), n, args.runs)},
        {"row": "pipelined", "us": measure(request_op(16), n // 16, args.runs, per=16)},
    ]
    for row in rows:
        row["us"] = round(row["us"], 2)
        row["per_s"] = round(1e6 / row["us"])
    print(f"client port, server side — {os.cpu_count()} CPUs ({platform.processor() or '?'}),"
          f" Python {platform.python_version()}; best of {args.runs} runs of {n:,}")
    print(f"{'row':<12}{'us/op':>8}{'ops/s (one core)':>18}")
    print("-" * 38)
    for row in rows:
        print(f"{row['row']:<12}{row['us']:>8.2f}{row['per_s']:>18,}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"quick": args.quick, "runs": args.runs, "n": n, "rows": rows,
             **{f"{r['row']}_us": r["us"] for r in rows}}, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
