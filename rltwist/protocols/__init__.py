"""Client protocol: framing, message ids and Twisted protocols for both sides.

Wire format and id rules: docs/protocol.md. Messages live in
``rltwist.protocols.pb`` (generated from proto/*.proto by tools/gen_proto.py).
"""

from rltwist.protocols.client import (
    ClientProtocol,
    RequestConnectionLost,
    RequestTimeout,
    ResponseError,
)
from rltwist.protocols.codec import (
    decode_downstream,
    decode_request,
    encode_push,
    encode_request,
    encode_response,
)
from rltwist.protocols.framing import (
    MAX_UP_BODY,
    MAX_UP_LENGTH,
    MIN_LENGTH,
    Frame,
    FrameDecoder,
    FrameError,
    decode_down,
    decode_up,
    encode_down,
    encode_up,
)
from rltwist.protocols.registry import (
    REGISTRY,
    MessageInfo,
    Registry,
    UnknownMessage,
    class_of,
    id_of,
    response_class_of,
)
from rltwist.protocols.server import (
    CloseReason,
    ProtocolViolation,
    ServerProtocol,
    ServerProtocolFactory,
)

__all__ = [
    "MAX_UP_BODY",
    "MAX_UP_LENGTH",
    "MIN_LENGTH",
    "REGISTRY",
    "ClientProtocol",
    "CloseReason",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "MessageInfo",
    "ProtocolViolation",
    "Registry",
    "RequestConnectionLost",
    "RequestTimeout",
    "ResponseError",
    "ServerProtocol",
    "ServerProtocolFactory",
    "UnknownMessage",
    "class_of",
    "decode_down",
    "decode_downstream",
    "decode_request",
    "decode_up",
    "encode_down",
    "encode_push",
    "encode_request",
    "encode_response",
    "encode_up",
    "id_of",
    "response_class_of",
]
