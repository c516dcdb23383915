"""Whole-message encode/decode: protobuf message <-> frame bytes.

The protocols in ``server`` and ``client`` inline the same steps for speed;
these helpers are for tools, tests and code that is not a Twisted protocol.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from rltwist.protocols.framing import encode_down, encode_up
from rltwist.protocols.registry import REGISTRY, Registry, UnknownMessage


def _lookup(table: dict[type[Message], int], message: Message, what: str) -> int:
    try:
        return table[type(message)]
    except KeyError:
        raise UnknownMessage(f"{type(message).__qualname__} is not a registered {what}") from None


def encode_request(message: Message, session: int, registry: Registry = REGISTRY) -> bytes:
    """Upstream frame for a request (``Login``, ``Auth``, ...)."""
    proto = _lookup(registry.request_ids, message, "request")
    return encode_up(proto, session, message.SerializeToString())


def encode_response(session: int, message: Message, registry: Registry = REGISTRY) -> bytes:
    """Downstream frame answering ``session``; the proto is the request's id."""
    if session == 0:
        raise ValueError("session 0 is reserved for pushes")
    proto = _lookup(registry.response_ids, message, "response")
    return encode_down(proto, session, message.SerializeToString())


def encode_push(message: Message, registry: Registry = REGISTRY) -> bytes:
    """Downstream push frame (session 0) for an ``XxxNotify`` message."""
    proto = _lookup(registry.push_ids, message, "push")
    return encode_down(proto, 0, message.SerializeToString())


def _parse(cls: type[Message], body: bytes) -> Message:
    message = cls()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise
    except Exception as e:  # the pure-Python runtime raises e.g. UnicodeDecodeError
        raise DecodeError(f"error parsing {cls.DESCRIPTOR.full_name}: {e}") from e
    return message


def decode_request(proto: int, body: bytes, registry: Registry = REGISTRY) -> Message:
    """Parse an upstream body. Raises ``UnknownMessage`` or ``DecodeError``."""
    cls = registry.requests.get(proto)
    if cls is None:
        raise UnknownMessage(f"{proto} is not a request id")
    return _parse(cls, body)


def decode_downstream(proto: int, session: int, body: bytes,
                      registry: Registry = REGISTRY) -> Message:
    """Parse a downstream body: a push when ``session`` is 0, else a response."""
    table = registry.pushes if session == 0 else registry.responses
    cls = table.get(proto)
    if cls is None:
        kind = "push" if session == 0 else "response"
        raise UnknownMessage(f"{proto} is not a {kind} id")
    return _parse(cls, body)
