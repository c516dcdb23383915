"""Generated from proto/*.proto by tools/gen_proto.py. DO NOT EDIT."""

from . import chat_pb2, errors_pb2, login_pb2, mail_pb2, options_pb2, player_pb2
from .chat_pb2 import ChatChannel, ChatHistory, ChatMessage, ChatNotify, ChatSend
from .errors_pb2 import ErrorCode
from .login_pb2 import Auth, Heartbeat, KickNotify, KickReason, Login
from .mail_pb2 import GiftSend, Mail, MailClaim, MailDelete, MailList, MailNotify, MailRead, MailSend, MailSummary
from .player_pb2 import PlayerBasics, Rename

#: Every generated module, for the message id registry.
MODULES = (chat_pb2, errors_pb2, login_pb2, mail_pb2, options_pb2, player_pb2)

__all__ = [
    "Auth",
    "ChatChannel",
    "ChatHistory",
    "ChatMessage",
    "ChatNotify",
    "ChatSend",
    "ErrorCode",
    "GiftSend",
    "Heartbeat",
    "KickNotify",
    "KickReason",
    "Login",
    "MODULES",
    "Mail",
    "MailClaim",
    "MailDelete",
    "MailList",
    "MailNotify",
    "MailRead",
    "MailSend",
    "MailSummary",
    "PlayerBasics",
    "Rename",
]
