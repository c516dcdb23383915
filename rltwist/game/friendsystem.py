"""Friend system: friend lists, requests and block lists of one player, kept in component
``friends`` of the player's rolecity entity (birth region), and the rules that make the
two sides of a pair agree across regions.

Component (keys of per-player maps are userids as strings: storage documents take string
keys only)::

    {"friends":      {"<userid>": {"since_ms": t, "name": n}},
     "requests_in":  {"<userid>": {"time_ms": t, "name": n}},   # received, waiting
     "requests_out": {"<userid>": {"time_ms": t, "name": n}},   # sent, waiting
     "blocked":      [userid, ...],                             # ints (chat reads it)
     "outbox":       {"<userid>": {"op", "id", "time_ms"}},     # to deliver to userid
     "ver":          {"<userid>": v},     # version of the pair's state (see below)
     "seen":         {"<userid>": id},    # owner: last operation applied from userid
     "seq":          n,                   # last outbox id
     "last_seen_ms": t}                   # last logout

The two players of a pair live in two regions, so one of them owns the pair's state: the
one with the smaller userid (the *owner*). Every change either player makes is applied to
its own side at once and saved with an outbox entry for the other, in one write (durable
at OK):

* the owner's change bumps the pair's version and queues ``sync``: the owner's state, as
  the other sees it, with the version; the other side takes it if the version is newer;
* the other player's change is tentative and queues the operation (``request``,
  ``accept`` or ``remove``): the owner applies it by its own rules (blocks, caps, what it
  holds), bumps the version and answers its state with it, which the sender takes.

An outbox entry is delivered (and retried) until answered, then dropped if no newer change
replaced it; answers and syncs older than what a side has are ignored, and the owner
answers a repeated operation without applying it twice. Once the outboxes are empty both
sides hold the owner's latest state. A side that refuses what it is sent (it blocks the
sender, or holds too many requests) answers so and queues a ``remove`` (*vetoed*).

Every method here is synchronous and works on one entity; the caller runs it inside the
entity's serialized LRU action and saves it before answering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.ecs.system import System
from rltwist.protocols import pb

__all__ = ["DEFAULT_LIMITS", "FriendSystem", "system"]

E = pb.ErrorCode

REQUEST, ACCEPT, REMOVE = "request", "accept", "remove"
#: a side's relation to another player: friends; holds its request; asked it; none
FRIENDS, IN, OUT, NONE = "friends", "in", "out", "none"
#: outbox message kinds: the owner's state, or the other player's operation
SYNC, OP = "sync", "op"
#: events pushed to a player (FriendNotify.event)
EV_REQUEST, EV_ACCEPTED, EV_REMOVED = "request", "accepted", "removed"

#: senders whose last operation id is remembered (a late copy of an older operation is
#: answered without being applied); the least recently heard from are forgotten first
MAX_SEEN = 2000

DEFAULT_LIMITS: dict[str, int] = {"max_friends": 100, "max_requests_in": 50,
                                  "max_blocked": 100}


def limits(tables: Mapping[str, Any] | None) -> dict[str, int]:
    """The friends table (``etc/game/friends.toml``) with defaults for missing keys."""
    table = (tables or {}).get("friends") or {}
    return {k: int(table.get(k, v)) for k, v in DEFAULT_LIMITS.items()}


def mirror(state: str) -> str:
    """*state* as the other player of the pair sees it."""
    return {IN: OUT, OUT: IN}.get(state, state)


class FriendSystem(System):
    name = "friends"

    def limits(self, tables: Mapping[str, Any] | None) -> dict[str, int]:
        """The friends table with defaults (see :func:`limits`)."""
        return limits(tables)

    # -- reading ------------------------------------------------------------------------

    def state(self, entity: Entity) -> dict[str, Any]:
        """The component, with every part present (a live dict: mark the entity dirty
        after changing it)."""
        c = self.component(entity)
        for key in ("friends", "requests_in", "requests_out", "outbox", "ver", "seen"):
            c.setdefault(key, {})
        c.setdefault("blocked", [])
        c.setdefault("seq", 0)
        return c

    def blocked(self, entity: Entity) -> list[int]:
        return list(entity.components.get(self.name, {}).get("blocked", []))

    def view(self, entity: Entity) -> dict[str, Any]:
        """A copy of the lists (no outbox), for FriendList and login."""
        c = entity.components.get(self.name, {})
        return {"friends": dict(c.get("friends", {})),
                "requests_in": dict(c.get("requests_in", {})),
                "requests_out": dict(c.get("requests_out", {})),
                "blocked": list(c.get("blocked", [])),
                "last_seen_ms": c.get("last_seen_ms", 0)}

    def relation(self, entity: Entity, peer: int) -> str:
        """``friends``, ``in`` (holds peer's request), ``out`` (asked peer) or ``none``."""
        return _relation(entity.components.get(self.name, {}), str(peer))

    def pending(self, entity: Entity) -> list[dict[str, Any]]:
        """The outbox as messages to deliver, oldest first: ``{"kind": "sync", "to",
        "from", "id", "name", "state", "ver"}`` (owner) or ``{"kind": "op", "op", "to",
        "from", "id", "name"}``."""
        c = entity.components.get(self.name, {})
        name = entity.get("name", "") or ""
        msgs = []
        for key, entry in c.get("outbox", {}).items():
            msg = {"to": int(key), "from": entity.id, "id": entry["id"], "name": name}
            if entry["op"] == SYNC:
                msg.update(kind=SYNC, state=mirror(_relation(c, key)),
                           ver=c.get("ver", {}).get(key, 0))
            else:
                msg.update(kind=OP, op=entry["op"])
            msgs.append(msg)
        return sorted(msgs, key=lambda m: m["id"])

    def name_of(self, entity: Entity, peer: int) -> str:
        """The name this side last heard for *peer* (lists' fallback when its region does
        not answer)."""
        c = entity.components.get(self.name, {})
        key = str(peer)
        for part in ("friends", "requests_in", "requests_out"):
            entry = c.get(part, {}).get(key)
            if entry and entry.get("name"):
                return str(entry["name"])
        return ""

    # -- the player's own changes -----------------------------------------------------

    def _changed(self, entity: Entity, c: dict[str, Any], peer: int, op: str,
                 now_ms: int) -> None:
        """This side changed its relation to *peer* by *op*: queue what tells the other."""
        key = str(peer)
        c["seq"] = c.get("seq", 0) + 1
        if entity.id < peer:  # we own the pair: a new version, synced to the other side
            c["ver"][key] = c["ver"].get(key, 0) + 1
            op = SYNC
        c["outbox"][key] = {"op": op, "id": c["seq"], "time_ms": now_ms}
        entity.mark_dirty()

    def request(self, entity: Entity, to: int, now_ms: int,
                tables: Mapping[str, Any] | None = None) -> tuple[int, str]:
        """Ask *to* to be friends: ``(code, relation)``; asking someone who asked first
        accepts."""
        c = self.state(entity)
        key = str(to)
        if to == entity.id:
            return E.FRIEND_SELF, NONE
        if to in c["blocked"]:
            return E.FRIEND_YOU_BLOCK, NONE
        now = _relation(c, key)
        if now == FRIENDS:
            return E.FRIEND_ALREADY, FRIENDS
        if now == IN:
            code = self.accept(entity, to, now_ms, tables)
            return code, (FRIENDS if code == E.OK else IN)
        if now == OUT:
            if key not in c["outbox"]:  # asked again: tell again (idempotent there)
                self._changed(entity, c, to, REQUEST, now_ms)
            return E.OK, OUT
        if self._count(c) >= limits(tables)["max_friends"]:
            return E.FRIEND_LIST_FULL, NONE
        _set(c, key, OUT, now_ms, "")
        self._changed(entity, c, to, REQUEST, now_ms)
        return E.OK, OUT

    @staticmethod
    def _count(c: Mapping[str, Any]) -> int:
        return len(c["friends"]) + len(c["requests_out"])

    def accept(self, entity: Entity, frm: int, now_ms: int,
               tables: Mapping[str, Any] | None = None) -> int:
        """Accept the request received from *frm*."""
        c = self.state(entity)
        key = str(frm)
        if key not in c["requests_in"]:
            return E.FRIEND_NO_REQUEST
        if self._count(c) >= limits(tables)["max_friends"]:
            return E.FRIEND_LIST_FULL
        _set(c, key, FRIENDS, now_ms, c["requests_in"][key].get("name", ""))
        self._changed(entity, c, frm, ACCEPT, now_ms)
        return E.OK

    def accept_all(self, entity: Entity, now_ms: int,
                   tables: Mapping[str, Any] | None = None) -> tuple[int, list[int]]:
        """Accept every request waiting, oldest first, while the cap leaves room."""
        c = self.state(entity)
        waiting = sorted(c["requests_in"].items(), key=lambda kv: kv[1].get("time_ms", 0))
        accepted: list[int] = []
        for key, _ in waiting:
            if self.accept(entity, int(key), now_ms, tables) != E.OK:
                return (E.OK if accepted else E.FRIEND_LIST_FULL), accepted
            accepted.append(int(key))
        return E.OK, accepted

    def reject(self, entity: Entity, frm: int, now_ms: int) -> int:
        """Reject the request received from *frm*."""
        c = self.state(entity)
        if str(frm) not in c["requests_in"]:
            return E.FRIEND_NO_REQUEST
        _set(c, str(frm), NONE, now_ms, "")
        self._changed(entity, c, frm, REMOVE, now_ms)
        return E.OK

    def remove(self, entity: Entity, other: int, now_ms: int) -> int:
        """End the friendship with *other*, or withdraw the request sent to it."""
        c = self.state(entity)
        if _relation(c, str(other)) not in (FRIENDS, OUT):
            return E.FRIEND_NOT_FRIEND
        _set(c, str(other), NONE, now_ms, "")
        self._changed(entity, c, other, REMOVE, now_ms)
        return E.OK

    def block(self, entity: Entity, other: int, now_ms: int,
              tables: Mapping[str, Any] | None = None) -> int:
        """Block *other*: ends every relation with it on both sides."""
        c = self.state(entity)
        if other == entity.id:
            return E.FRIEND_SELF
        if other in c["blocked"]:
            return E.OK
        if len(c["blocked"]) >= limits(tables)["max_blocked"]:
            return E.FRIEND_BLOCK_LIST_FULL
        c["blocked"].append(other)
        _set(c, str(other), NONE, now_ms, "")
        self._changed(entity, c, other, REMOVE, now_ms)
        return E.OK

    def unblock(self, entity: Entity, other: int) -> int:
        c = self.state(entity)
        if other not in c["blocked"]:
            return E.FRIEND_NOT_BLOCKED
        c["blocked"].remove(other)
        entity.mark_dirty()
        return E.OK

    def seen(self, entity: Entity, now_ms: int) -> None:
        """The player logged out at *now_ms* (kept with the next save)."""
        self.component(entity)["last_seen_ms"] = now_ms
        entity.mark_dirty()

    # -- the other side -------------------------------------------------------------------

    def receive(self, entity: Entity, msg: Mapping[str, Any], now_ms: int,
                tables: Mapping[str, Any] | None = None
                ) -> tuple[dict[str, Any], str | None]:
        """Take message *msg* of player ``msg["from"]`` (from its :meth:`pending`):
        ``(answer for the sender, event to push to this player or None)``."""
        c = self.state(entity)
        sender = int(msg["from"])
        key = str(sender)
        name = str(msg.get("name") or "")
        entity.mark_dirty()
        if msg["kind"] == SYNC:
            vetoed, event = self._take(entity, c, sender, str(msg["state"]),
                                       int(msg["ver"]), now_ms, name, tables)
            return {"state": _relation(c, key), "vetoed": vetoed}, event
        if entity.id > sender:
            raise ValueError(f"{sender} sent an operation to {entity.id}, which does not "
                             "own the pair")
        seen = c["seen"]
        if int(msg["id"]) > seen.get(key, 0):  # else a repeat: answered, not applied again
            seen.pop(key, None)
            seen[key] = int(msg["id"])
            while len(seen) > MAX_SEEN:
                del seen[next(iter(seen))]
            event = self._apply(c, str(msg["op"]), sender, key, name, now_ms, tables)
            c["ver"][key] = c["ver"].get(key, 0) + 1
        else:
            event = None
        return {"state": mirror(_relation(c, key)), "ver": c["ver"].get(key, 0)}, event

    def _apply(self, c: dict[str, Any], op: str, sender: int, key: str, name: str,
               now_ms: int, tables: Mapping[str, Any] | None) -> str | None:
        """The owner applies the other player's operation *op*; the event for the owner."""
        now = _relation(c, key)
        if op == REMOVE:
            _set(c, key, NONE, now_ms, name)
            return EV_REMOVED if now == FRIENDS else None
        if sender in c["blocked"]:
            _set(c, key, NONE, now_ms, name)
            return None
        if op == ACCEPT:
            if now == OUT:
                _set(c, key, FRIENDS, now_ms, name)
                return EV_ACCEPTED
            if now == FRIENDS:
                _set(c, key, FRIENDS, now_ms, name)
            return None  # withdrawn meanwhile: the sender's side takes it back
        if op != REQUEST:
            raise ValueError(f"unknown friend operation {op!r}")
        if now == OUT:  # both asked: friends
            _set(c, key, FRIENDS, now_ms, name)
            return EV_ACCEPTED
        if now in (FRIENDS, IN):
            _set(c, key, now, now_ms, name)
            return None
        if len(c["requests_in"]) >= limits(tables)["max_requests_in"]:
            return None
        _set(c, key, IN, now_ms, name)
        return EV_REQUEST

    def _take(self, entity: Entity, c: dict[str, Any], owner: int, state: str, ver: int,
              now_ms: int, name: str, tables: Mapping[str, Any] | None
              ) -> tuple[bool, str | None]:
        """Take the owner's *state* (as this side sees it) if *ver* is newer than what this
        side has: ``(vetoed, event)``."""
        key = str(owner)
        if ver <= c["ver"].get(key, 0):
            return False, None
        c["ver"][key] = ver
        before = _relation(c, key)
        refuse = (state != NONE and owner in c["blocked"]) or (
            state == IN and before != IN
            and len(c["requests_in"]) >= limits(tables)["max_requests_in"])
        if refuse:
            _set(c, key, NONE, now_ms, name)
            self._changed(entity, c, owner, REMOVE, now_ms)
            return True, None
        _set(c, key, state, now_ms, name)
        return False, _event(before, state)

    def settle(self, entity: Entity, msg: Mapping[str, Any], answer: Mapping[str, Any],
               now_ms: int, tables: Mapping[str, Any] | None = None
               ) -> tuple[bool, str | None]:
        """The other side answered *answer* to *msg* (from :meth:`pending`): take it and
        drop the outbox entry unless a newer change replaced it. ``(dropped, event for
        this player)``."""
        c = self.state(entity)
        peer = int(msg["to"])
        key = str(peer)
        event = None
        if msg["kind"] == OP:
            _, event = self._take(entity, c, peer, str(answer["state"]), int(answer["ver"]),
                                  now_ms, "", tables)
        entry = c["outbox"].get(key)
        if entry is None or entry["id"] != msg["id"]:
            return False, event
        del c["outbox"][key]
        entity.mark_dirty()
        return True, event


def _relation(c: Mapping[str, Any], key: str) -> str:
    if key in c.get("friends", {}):
        return FRIENDS
    if key in c.get("requests_in", {}):
        return IN
    if key in c.get("requests_out", {}):
        return OUT
    return NONE


def _set(c: dict[str, Any], key: str, state: str, now_ms: int, name: str) -> None:
    """Make this side's relation to *key* be *state* (keeping times and names)."""
    parts = {FRIENDS: "friends", IN: "requests_in", OUT: "requests_out"}
    old: dict[str, Any] = {}
    for part in parts.values():
        old = c[part].pop(key, None) or old
    name = name or old.get("name", "")
    if state == FRIENDS:
        since = old.get("since_ms") or now_ms
        c["friends"][key] = {"since_ms": since, "name": name}
    elif state in parts:
        c[parts[state]][key] = {"time_ms": old.get("time_ms") or now_ms, "name": name}


def _event(before: str, after: str) -> str | None:
    if after == before:
        return None
    if after == FRIENDS:
        return EV_ACCEPTED
    if after == IN:
        return EV_REQUEST
    if before == FRIENDS:
        return EV_REMOVED
    return None


system = FriendSystem()
