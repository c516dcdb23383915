"""Byte framing of the client protocol (docs/protocol.md).

Upstream (client -> server): ``u16 len | u16 proto | u32 session | body``.
Downstream (server -> client): ``u32 len | u16 proto | u32 session | body``.
``len`` counts proto + session + body, so it is at least 6; all integers are
big-endian. This module knows nothing about protobuf: a frame is
``(proto, session, body)`` with ``body`` as raw bytes.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

UP_HEADER: Final = struct.Struct(">HHI")
DOWN_HEADER: Final = struct.Struct(">IHI")
# proto + session, the part of the header that ``len`` counts.
_PROTO_SESSION: Final = struct.Struct(">HI")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")

MIN_LENGTH: Final = 6
MAX_UP_LENGTH: Final = 0xFFFF
MAX_DOWN_LENGTH: Final = 0xFFFFFFFF
MAX_UP_BODY: Final = MAX_UP_LENGTH - MIN_LENGTH
MAX_DOWN_BODY: Final = MAX_DOWN_LENGTH - MIN_LENGTH
MAX_PROTO: Final = 0xFFFF
MAX_SESSION: Final = 0xFFFFFFFF


class Frame(NamedTuple):
    """One decoded frame; ``session`` 0 downstream means a push."""

    proto: int
    session: int
    body: bytes


class FrameError(ValueError):
    """The peer sent bytes that cannot be a frame; the connection must close.

    ``reason`` is a short stable token (``frame_too_short``,
    ``frame_too_large``) suitable as a log field and metric label.
    """

    def __init__(self, reason: str, length: int, limit: int) -> None:
        super().__init__(f"{reason}: length field {length} (allowed {MIN_LENGTH}..{limit})")
        self.reason = reason
        self.length = length
        self.limit = limit


def _encode(header: struct.Struct, max_body: int, proto: int, session: int, body: bytes) -> bytes:
    if len(body) > max_body:
        raise ValueError(f"body of {len(body)} bytes exceeds the frame limit of {max_body}")
    if not 0 <= proto <= MAX_PROTO:
        raise ValueError(f"proto {proto} is not a u16")
    if not 0 <= session <= MAX_SESSION:
        raise ValueError(f"session {session} is not a u32")
    return header.pack(MIN_LENGTH + len(body), proto, session) + body


def encode_up(proto: int, session: int, body: bytes = b"") -> bytes:
    """Build one upstream (client -> server) frame.

    Raises ``ValueError`` if the body is longer than ``MAX_UP_BODY`` (65529
    bytes) or proto/session do not fit their fields.
    """
    return _encode(UP_HEADER, MAX_UP_BODY, proto, session, body)


def encode_down(proto: int, session: int, body: bytes = b"") -> bytes:
    """Build one downstream (server -> client) frame; session 0 is a push."""
    return _encode(DOWN_HEADER, MAX_DOWN_BODY, proto, session, body)


def _decode_one(decoder: FrameDecoder, frame: bytes) -> Frame:
    frames = decoder.feed(frame)
    if len(frames) != 1 or decoder.buffered:
        raise ValueError(f"expected exactly one complete frame, got {len(frames)} and "
                         f"{decoder.buffered} trailing bytes")
    return frames[0]


def decode_up(frame: bytes) -> Frame:
    """Decode exactly one complete upstream frame (tests, tools)."""
    return _decode_one(FrameDecoder(downstream=False), frame)


def decode_down(frame: bytes) -> Frame:
    """Decode exactly one complete downstream frame (tests, tools)."""
    return _decode_one(FrameDecoder(downstream=True), frame)


class FrameDecoder:
    """Incremental frame parser for one connection and one direction.

    ``feed`` takes whatever TCP delivered and returns the frames completed by
    it. The length field is checked as soon as its bytes arrive, so a bad
    length closes the connection before its body is buffered. While a frame
    is incomplete the bytes are appended to a ``bytearray`` and not re-parsed
    until enough have arrived, so a large frame delivered in many chunks costs
    linear time.
    """

    __slots__ = ("_buf", "_failed", "_len_size", "_max_length", "_need", "_unpack_len")

    def __init__(self, *, downstream: bool, max_length: int | None = None) -> None:
        limit = MAX_DOWN_LENGTH if downstream else MAX_UP_LENGTH
        if max_length is None:
            max_length = limit
        if not MIN_LENGTH <= max_length <= limit:
            raise ValueError(f"max_length must be within {MIN_LENGTH}..{limit}")
        length_struct = _U32 if downstream else _U16
        self._len_size = length_struct.size
        self._unpack_len = length_struct.unpack_from
        self._max_length = max_length
        self._buf = bytearray()
        self._need = 0
        self._failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order.

        Raises ``FrameError`` on a length field outside
        ``MIN_LENGTH..max_length``; frames completed before the bad one in
        the same call are lost with it, and every later call raises again.
        """
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)

        frames: list[Frame] = []
        append = frames.append
        unpack_len = self._unpack_len
        unpack_ps = _PROTO_SESSION.unpack_from
        len_size = self._len_size
        max_length = self._max_length
        end_of_data = len(data)
        offset = 0
        need = 0
        while True:
            available = end_of_data - offset
            if available < len_size:
                need = len_size
                break
            (length,) = unpack_len(data, offset)
            if length < MIN_LENGTH or length > max_length:
                reason = "frame_too_short" if length < MIN_LENGTH else "frame_too_large"
                self._failed = FrameError(reason, length, max_length)
                raise self._failed
            need = len_size + length
            if available < need:
                break
            proto, session = unpack_ps(data, offset + len_size)
            end = offset + need
            append(Frame(proto, session, data[offset + len_size + MIN_LENGTH : end]))
            offset = end
        if offset < end_of_data:
            buf += memoryview(data)[offset:]
            self._need = need
        return frames
