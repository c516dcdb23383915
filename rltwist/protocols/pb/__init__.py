"""Generated from proto/*.proto by tools/gen_proto.py. DO NOT EDIT."""

from . import activity_pb2, chat_pb2, errors_pb2, friend_pb2, guild_pb2, login_pb2, mail_pb2, map_pb2, march_pb2, options_pb2, player_pb2, region_pb2
from .activity_pb2 import Activity, ActivityEvent, ActivityList, ActivityNotify
from .chat_pb2 import ChatChannel, ChatHistory, ChatMessage, ChatNotify, ChatSend
from .errors_pb2 import ErrorCode
from .friend_pb2 import FriendAccept, FriendBlock, FriendEvent, FriendInfo, FriendList, FriendNotify, FriendReject, FriendRemove, FriendRequest, FriendState, FriendUnblock
from .guild_pb2 import GuildApplication, GuildApply, GuildApprove, GuildCreate, GuildDisband, GuildEvent, GuildInfo, GuildJoin, GuildKick, GuildLeave, GuildList, GuildMember, GuildNotify, GuildRejectApply, GuildRole, GuildSearch, GuildSetRole, GuildSummary, GuildTransferLeader
from .login_pb2 import Auth, Heartbeat, KickNotify, KickReason, Login
from .mail_pb2 import GiftSend, Mail, MailClaim, MailDelete, MailList, MailNotify, MailRead, MailSend, MailSummary
from .map_pb2 import MapEntity, MapEntityKind, MapInfo, MapMyCity, MapNotify, MapView, MapViewClear, MarchLine, MarchState, MarchType
from .march_pb2 import BattleReportNotify, MarchEvent, MarchInfo, MarchList, MarchNotify, MarchRecall, MarchStart, MarchTargets, TroopCount
from .player_pb2 import PlayerBasics, Rename
from .region_pb2 import MoveCity, RegionInfo, RegionList

#: Every generated module, for the message id registry.
MODULES = (activity_pb2, chat_pb2, errors_pb2, friend_pb2, guild_pb2, login_pb2, mail_pb2, map_pb2, march_pb2, options_pb2, player_pb2, region_pb2)

__all__ = [
    "Activity",
    "ActivityEvent",
    "ActivityList",
    "ActivityNotify",
    "Auth",
    "BattleReportNotify",
    "ChatChannel",
    "ChatHistory",
    "ChatMessage",
    "ChatNotify",
    "ChatSend",
    "ErrorCode",
    "FriendAccept",
    "FriendBlock",
    "FriendEvent",
    "FriendInfo",
    "FriendList",
    "FriendNotify",
    "FriendReject",
    "FriendRemove",
    "FriendRequest",
    "FriendState",
    "FriendUnblock",
    "GiftSend",
    "GuildApplication",
    "GuildApply",
    "GuildApprove",
    "GuildCreate",
    "GuildDisband",
    "GuildEvent",
    "GuildInfo",
    "GuildJoin",
    "GuildKick",
    "GuildLeave",
    "GuildList",
    "GuildMember",
    "GuildNotify",
    "GuildRejectApply",
    "GuildRole",
    "GuildSearch",
    "GuildSetRole",
    "GuildSummary",
    "GuildTransferLeader",
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
    "MapEntity",
    "MapEntityKind",
    "MapInfo",
    "MapMyCity",
    "MapNotify",
    "MapView",
    "MapViewClear",
    "MarchEvent",
    "MarchInfo",
    "MarchLine",
    "MarchList",
    "MarchNotify",
    "MarchRecall",
    "MarchStart",
    "MarchState",
    "MarchTargets",
    "MarchType",
    "MoveCity",
    "PlayerBasics",
    "RegionInfo",
    "RegionList",
    "Rename",
    "TroopCount",
]
