"""Chat system: the rules of a chat message (text, rate limit, mute, block lists, kept
history), used by the role nodes that take ``ChatSend`` and by the chat services that keep
the channels (rltwist/features/chat). Reached through ``import_system`` so ``POST
/hotfix`` changes them in running nodes.

Every method is pure: the caller holds the state (a player's token bucket on its role
node, a channel's history in its entity) and passes it in. Table ``chat``
(``etc/game/chat.toml``) gives the limits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from rltwist.ecs.system import System
from rltwist.protocols import pb

__all__ = ["ChatSystem", "system"]

E = pb.ErrorCode
C = pb.ChatChannel

#: Unicode categories refused in a chat text: control, format (bidi overrides, zero-width
#: joiners used to hide words), surrogates, private use, unassigned.
BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class ChatSystem(System):
    name = "chat"

    def check_text(self, text: str, tables: Mapping[str, Any]) -> pb.ErrorCode:
        """OK, or CHAT_TEXT_INVALID for an empty or blank text, one longer than
        ``chat.max_length`` characters, or one with control/format characters."""
        limit = tables["chat"]["max_length"]
        if not isinstance(text, str) or not text.strip() or len(text) > limit:
            return E.CHAT_TEXT_INVALID
        for ch in text:
            if unicodedata.category(ch) in BAD_CATEGORIES:
                return E.CHAT_TEXT_INVALID
        return E.OK

    def take_token(self, bucket: list[float] | None, now: float,
                   tables: Mapping[str, Any]) -> tuple[bool, list[float]]:
        """One message against a token bucket ``[tokens, at]``: ``(allowed, new bucket)``.
        A new player's bucket is full (``chat.burst`` messages) and refills at
        ``chat.rate`` per second."""
        rules = tables["chat"]
        burst = float(rules["burst"])
        if bucket is None:
            tokens, at = burst, now
        else:
            tokens, at = bucket
            tokens = min(burst, tokens + max(0.0, now - at) * float(rules["rate"]))
        if tokens < 1.0:
            return False, [tokens, now]
        return True, [tokens - 1.0, now]

    def muted_until(self, mute: Mapping[str, Any] | None, now_ms: int) -> int:
        """Until when (ms since the epoch) a GM mute holds, 0 if the player is not muted
        (none, lifted, or expired)."""
        if not mute:
            return 0
        until = int(mute.get("until_ms", 0) or 0)
        return until if until > now_ms else 0

    def mute_record(self, seconds: int, reason: str, now_ms: int) -> dict[str, Any]:
        """What a GM mute of *seconds* stores (0 lifts it)."""
        if seconds <= 0:
            return {"until_ms": 0, "reason": "", "set_ms": now_ms}
        return {"until_ms": now_ms + seconds * 1000, "reason": reason, "set_ms": now_ms}

    def blocks(self, friends: Mapping[str, Any] | None, sender: int) -> bool:
        """Does the owner of the ``friends`` component block *sender*?"""
        if not friends:
            return False
        blocked = friends.get("blocked") or ()
        return any(int(u) == sender for u in blocked)

    def message(self, channel: int, sender: int, name: str, region: int, text: str,
                now_ms: int, to_userid: int = 0, guild_id: int = 0,
                map_region: int = 0) -> dict[str, Any]:
        """A message as pushed and kept (keys are ``ChatMessage`` field names)."""
        return {"channel": int(channel), "from_userid": sender, "from_name": name,
                "from_region": region, "text": text, "time_ms": now_ms,
                "to_userid": to_userid, "guild_id": guild_id, "region": map_region}

    def keep(self, history: list[Any], message: Mapping[str, Any], limit: int) -> list[Any]:
        """Append *message* to *history* (oldest first), keeping the last *limit*."""
        history.append(dict(message))
        if len(history) > limit:
            del history[:len(history) - limit]
        return history

    def to_pb(self, message: Mapping[str, Any]) -> pb.ChatMessage:
        """A kept message as the protocol's ChatMessage (unknown keys ignored)."""
        fields = pb.ChatMessage.DESCRIPTOR.fields_by_name
        return pb.ChatMessage(**{k: v for k, v in message.items() if k in fields})

    def to_pb_list(self, messages: Sequence[Mapping[str, Any]]) -> list[pb.ChatMessage]:
        return [self.to_pb(m) for m in messages]


system = ChatSystem()
