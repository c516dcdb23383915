"""Generated from proto/*.proto by tools/gen_proto.py. DO NOT EDIT."""

from . import errors_pb2, login_pb2, options_pb2, player_pb2
from .errors_pb2 import ErrorCode
from .login_pb2 import Auth, Heartbeat, KickNotify, KickReason, Login
from .player_pb2 import PlayerBasics, Rename

#: Every generated module, for the message id registry.
MODULES = (errors_pb2, login_pb2, options_pb2, player_pb2)

__all__ = [
    "Auth",
    "ErrorCode",
    "Heartbeat",
    "KickNotify",
    "KickReason",
    "Login",
    "MODULES",
    "PlayerBasics",
    "Rename",
]
