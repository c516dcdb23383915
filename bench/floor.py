"""The floor of bench/rpc.py: a minimal 4-byte-length-prefixed msgpack echo on a bare
Twisted Protocol, with no framework around it. rltwist's rates are reported against it.

    python bench/floor.py PORT      # serve on 127.0.0.1:PORT until killed

Frames: u32 big-endian length | msgpack body. Body ["c", payload] is echoed back as
["r", payload]; ["s", payload] is counted only; ["q"] answers ["n", count].
"""

from __future__ import annotations

import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import protocol

_len = struct.Struct(">I")
packb = msgpack.Packer(use_bin_type=True).pack


def unpackb(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False)


def frame(obj: Any) -> bytes:
    body = packb(obj)
    return _len.pack(len(body)) + body


class LengthPrefixed(protocol.Protocol):
    """Splits the stream into length-prefixed frames and hands each decoded body on."""

    def __init__(self) -> None:
        self._buf = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data
        pos, n = 0, len(buf)
        while n - pos >= 4:
            (size,) = _len.unpack_from(buf, pos)
            if n - pos - 4 < size:
                break
            self.message(unpackb(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        self._buf = buf[pos:]

    def message(self, msg: Any) -> None:
        raise NotImplementedError


class EchoServer(LengthPrefixed):
    count = 0

    def message(self, msg: Any) -> None:
        kind = msg[0]
        if kind == "c":
            self.transport.write(frame(["r", msg[1]]))
        elif kind == "s":
            self.count += 1
        else:
            self.transport.write(frame(["n", self.count]))


class FloorClient(LengthPrefixed):
    """Client side: replies arrive in order, so a FIFO of callbacks is enough."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: deque[Callable[[Any], None]] = deque()

    def call(self, payload: Any, callback: Callable[[Any], None]) -> None:
        self.waiting.append(callback)
        self.transport.write(frame(["c", payload]))

    def send(self, payload: Any) -> None:
        self.transport.write(frame(["s", payload]))

    def query(self, callback: Callable[[Any], None]) -> None:
        self.waiting.append(callback)
        self.transport.write(frame(["q"]))

    def message(self, msg: Any) -> None:
        self.waiting.popleft()(msg[1])


def main() -> None:
    from twisted.internet import reactor

    port = int(sys.argv[1])
    f = protocol.Factory.forProtocol(EchoServer)
    reactor.listenTCP(port, f, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"floor echo ready on 127.0.0.1:{port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
