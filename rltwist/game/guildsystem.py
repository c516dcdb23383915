"""Guild system: the rules of guilds (issue 12), on three kinds of entity.

- **The guild** (guild node, collection ``guild`` of the creator's region): attributes
  ``name``, ``leader``, ``open``, ``region``, ``created_ms``, ``disbanded``, ``pending``
  (the outbox is not empty); components ``members`` (str(userid) -> {"role", "name",
  "joined_ms"}; the name is refreshed when the member acts), ``applications``
  (str(userid) -> {"name", "time_ms"}), ``outbox`` and ``chat``.
- **The player's rolecity entity** (birth region): component ``guild`` {"guildid", "seq",
  "done"} is the arbiter of which guild a player is in, and every change of it adds a
  ``guild`` transfer to the player's rolecity ledger.
- **The player** (role node): attributes ``guildid`` (0: none) and ``guild_seq``, changed
  only by applying that transfer (:meth:`GuildSystem.apply_ledger`).

A membership change is two writes in two regions, so it goes through the guild's
**outbox**: the guild action changes the members and records, in the same entity (one
save), what the player's guildid must become (``{"guildid", "only_if", "tid", "join"}``).
The guild node then hands each entry to the player's rolecity (:meth:`rolecity_set`,
idempotent by ``tid``), and :meth:`settle` removes the entry — or, when the rolecity answers
``conflict`` (the player joined another guild meanwhile), removes the pending member too.
Entries that cannot be handed now stay in the saved outbox and are retried.

Every method answers ``pb.ErrorCode`` values (ints) or plain dicts; nothing here does I/O,
so the rules are unit-tested without processes and hot-fixed with ``POST /hotfix``.
"""

from __future__ import annotations

import time
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

from rltwist.cluster.routing import birth_region
from rltwist.ecs.entity import Entity
from rltwist.ecs.system import System
from rltwist.game.tables import char_class
from rltwist.nodes.common import transfer
from rltwist.protocols import pb

__all__ = ["LEADER", "MEMBER", "OFFICER", "ROLES", "GuildSystem", "NotAMember", "system"]

E = pb.ErrorCode
EV = pb.GuildEvent
R = pb.GuildRole
LEADER, OFFICER, MEMBER = "leader", "officer", "member"
#: rank of each role (a member may kick only lower ranks)
ROLES = {LEADER: 2, OFFICER: 1, MEMBER: 0}
ROLE_PB: dict[str, int] = {LEADER: R.GUILD_LEADER, OFFICER: R.GUILD_OFFICER, MEMBER: R.GUILD_MEMBER}
PB_ROLE: dict[int, str] = {v: k for k, v in ROLE_PB.items()}
CHAT_KEEP = 50
#: tids a rolecity entity remembers (idempotent retries of the outbox)
DONE_KEEP = 32
LEDGER = "rolecity"
"""The rolecity ledger's name (its transfer ids start with ``rolecity-``)."""
CHAT_FIELDS = frozenset(f.name for f in pb.ChatMessage.DESCRIPTOR.fields)


class NotAMember(Exception):
    """guildchat.history (or another member-only read) by a player outside the guild."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _members(entity: Entity) -> dict[str, Any]:
    return entity.component("members")


def _applications(entity: Entity) -> dict[str, Any]:
    return entity.component("applications")


def _outbox(entity: Entity) -> dict[str, Any]:
    return entity.component("outbox")


def _ids(d: Mapping[str, Any]) -> list[int]:
    return sorted(int(u) for u in d)


class GuildSystem(System):
    name = "guild"

    # -- names ---------------------------------------------------------------------------

    def normalize_name(self, name: str) -> str:
        """The stored form of a guild name: NFC, spaces trimmed and collapsed."""
        return " ".join(unicodedata.normalize("NFC", name).split())

    def name_key(self, name: str) -> str:
        """Key of the region's guild name index: equal up to case and width."""
        return unicodedata.normalize("NFKC", self.normalize_name(name)).casefold()

    def check_name(self, name: str, tables: Mapping[str, Any]) -> int:
        """GUILD_NAME_INVALID unless *name* fits ``guilds`` lengths and the characters and
        forbidden words of ``name_rules`` (spaces allowed inside)."""
        g = tables["guilds"]
        rules = tables["name_rules"]
        if not isinstance(name, str):
            return E.GUILD_NAME_INVALID
        name = self.normalize_name(name)
        if not g["name_min_length"] <= len(name) <= g["name_max_length"]:
            return E.GUILD_NAME_INVALID
        allowed = set(rules["charsets"])
        extra = rules.get("extra_chars", "")
        for ch in name:
            cls = char_class(ch)
            if not ((cls is not None and cls[0] in allowed) or ch in extra or ch == " "):
                return E.GUILD_NAME_INVALID
        key = self.name_key(name)
        if any(word.casefold() in key for word in rules.get("forbidden", ())):
            return E.GUILD_NAME_INVALID
        return E.OK

    # -- reading a guild -------------------------------------------------------------------

    def exists(self, entity: Entity) -> bool:
        return bool(entity.get("name")) and not entity.get("disbanded")

    def role_of(self, entity: Entity, userid: int) -> str | None:
        m = _members(entity).get(str(userid))
        return None if m is None else str(m["role"])

    def member_ids(self, entity: Entity) -> list[int]:
        return _ids(entity.components.get("members", {}))

    def may(self, entity: Entity, userid: int, permission: str,
            tables: Mapping[str, Any]) -> bool:
        role = self.role_of(entity, userid)
        return role is not None and permission in tables["guilds"]["roles"].get(role, ())

    def summary(self, entity: Entity, tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildSummary fields."""
        return {"guild_id": entity.id, "name": entity.get("name", ""),
                "region": entity.get("region", 0),
                "members": len(entity.components.get("members", {})),
                "max_members": tables["guilds"]["max_members"],
                "open": bool(entity.get("open")), "leader_id": entity.get("leader", 0)}

    def view(self, entity: Entity, userid: int, tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildInfo fields (online flags are the caller's): members, and applications
        when *userid* may approve them."""
        members = [{"user_id": int(u), "name": m.get("name", ""), "region": birth_region(int(u)),
                    "role": ROLE_PB[m["role"]], "joined_ms": m.get("joined_ms", 0)}
                   for u, m in sorted(entity.components.get("members", {}).items(),
                                      key=lambda kv: (-ROLES[kv[1]["role"]], int(kv[0])))]
        apps = []
        if self.may(entity, userid, "approve", tables):
            apps = [{"user_id": int(u), "name": a.get("name", ""), "region": birth_region(int(u)),
                     "time_ms": a.get("time_ms", 0)}
                    for u, a in sorted(entity.components.get("applications", {}).items())]
        return {"code": E.OK, "guild": self.summary(entity, tables), "members": members,
                "applications": apps}

    def info(self, entity: Entity) -> dict[str, Any]:
        """Plain view for operators and tests."""
        members = entity.components.get("members", {})
        return {"guildid": entity.id, "name": entity.get("name"), "owner": entity.get("leader"),
                "open": bool(entity.get("open")), "disbanded": bool(entity.get("disbanded")),
                "outbox": sorted(int(u) for u in entity.components.get("outbox", {})),
                "members": sorted(int(u) for u in members)}

    def touch(self, entity: Entity, userid: int, name: str) -> bool:
        """A member acted under *name*: show them with it (a rename since they joined);
        whether it changed (saved with the next periodic save)."""
        member = entity.components.get("members", {}).get(str(userid))
        if member is None or not isinstance(name, str) or not name or \
                member.get("name") == name:
            return False
        member["name"] = name
        entity.mark_dirty()
        return True

    # -- the outbox ------------------------------------------------------------------------

    def _queue(self, entity: Entity, userid: int, guildid: int, *, join: bool) -> None:
        """Record that *userid*'s guildid must become *guildid* (0: out of this guild)."""
        _outbox(entity)[str(userid)] = {"guildid": guildid, "only_if": entity.id,
                                        "join": join, "tid": uuid.uuid4().hex}
        entity["pending"] = True
        entity.mark_dirty()

    def outbox(self, entity: Entity) -> list[dict[str, Any]]:
        """The entries to hand to the players' rolecities: ``[{"userid", "guildid",
        "only_if", "join", "tid"}]``."""
        return [{"userid": int(u), **e} for u, e in sorted(
            entity.components.get("outbox", {}).items())]

    def settle(self, entity: Entity, userid: int, tid: str, result: str) -> dict[str, Any]:
        """The rolecity answered *result* ("ok" or "conflict") for entry *tid*: drop the
        entry; a join in conflict also drops the pending member. ``{"removed": bool}``."""
        box = _outbox(entity)
        entry = box.get(str(userid))
        removed = False
        if entry is None or entry["tid"] != tid:
            return {"removed": False}
        del box[str(userid)]
        if result == "conflict" and entry["join"]:
            m = _members(entity).pop(str(userid), None)
            removed = m is not None
            if removed and m["role"] == LEADER:  # a create whose owner joined elsewhere
                self._dissolve(entity)
        entity["pending"] = bool(box)
        entity.mark_dirty()
        return {"removed": removed}

    # -- membership ------------------------------------------------------------------------

    def _result(self, code: int = E.OK, deliver: list[int] | None = None,
                notify: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"code": int(code), "deliver": deliver or [], "notify": notify or []}

    def _note(self, entity: Entity, to: list[int], event: int, userid: int, by: int = 0,
              role: str = MEMBER) -> dict[str, Any]:
        return {"to": sorted(set(to)), "guild_id": entity.id, "event": event,
                "user_id": userid, "by_user_id": by, "role": ROLE_PB[role],
                "guild_name": entity.get("name", "")}

    def create(self, entity: Entity, owner: int, owner_name: str, name: str, open: bool,
               region: int) -> dict[str, Any]:
        """Make a new guild led by *owner* (idempotent: the same owner again is OK)."""
        if entity.get("name"):
            if entity.get("leader") == owner or owner in self.member_ids(entity):
                code = E.OK if self.exists(entity) else E.GUILD_ALREADY_IN_GUILD
                return self._result(code, deliver=[owner] if str(owner) in _outbox(entity)
                                    else [])
            return self._result(E.GUILD_NAME_TAKEN)
        entity["name"] = self.normalize_name(name)
        entity["leader"] = owner
        entity["open"] = bool(open)
        entity["region"] = region
        entity["created_ms"] = _now_ms()
        _members(entity)[str(owner)] = {"role": LEADER, "name": owner_name,
                                        "joined_ms": _now_ms()}
        self._queue(entity, owner, entity.id, join=True)
        return self._result(deliver=[owner])

    def _add(self, entity: Entity, userid: int, name: str, by: int,
             tables: Mapping[str, Any]) -> dict[str, Any]:
        members = _members(entity)
        if str(userid) in members:
            # already in (a retry): hand the entry again if it is still pending
            return self._result(deliver=[userid] if str(userid) in _outbox(entity) else [])
        if len(members) >= tables["guilds"]["max_members"]:
            return self._result(E.GUILD_FULL)
        _applications(entity).pop(str(userid), None)
        members[str(userid)] = {"role": MEMBER, "name": name, "joined_ms": _now_ms()}
        self._queue(entity, userid, entity.id, join=True)
        note = self._note(entity, self.member_ids(entity), EV.GUILD_JOINED, userid, by)
        return self._result(deliver=[userid], notify=[note])

    def join(self, entity: Entity, userid: int, name: str,
             tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildJoin: an open guild takes *userid* (pending until its rolecity agrees)."""
        if not self.exists(entity):
            return self._result(E.GUILD_NOT_FOUND)
        if not entity.get("open") and str(userid) not in _members(entity):
            return self._result(E.GUILD_CLOSED)
        return self._add(entity, userid, name, userid, tables)

    def apply(self, entity: Entity, userid: int, name: str,
              tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildApply: record an application (an open guild: join at once)."""
        if not self.exists(entity):
            return self._result(E.GUILD_NOT_FOUND)
        if entity.get("open") or str(userid) in _members(entity):
            return {**self._add(entity, userid, name, userid, tables), "joined": True}
        if len(_members(entity)) >= tables["guilds"]["max_members"]:
            return self._result(E.GUILD_FULL)
        apps = _applications(entity)
        if str(userid) not in apps:
            if len(apps) >= tables["guilds"]["max_applications"]:
                return self._result(E.GUILD_TOO_MANY_APPLICATIONS)
            apps[str(userid)] = {"name": name, "time_ms": _now_ms()}
            entity.mark_dirty()
        approvers = [u for u in self.member_ids(entity)
                     if self.may(entity, u, "approve", tables)]
        return self._result(notify=[self._note(entity, approvers, EV.GUILD_APPLIED, userid)])

    def approve(self, entity: Entity, by: int, userid: int,
                tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildApprove by *by* (permission "approve") of *userid*'s application."""
        code = self._check_actor(entity, by, "approve", tables)
        if code != E.OK:
            return self._result(code)
        app = _applications(entity).get(str(userid))
        if app is None:
            return self._result(E.GUILD_NO_APPLICATION)
        result = self._add(entity, userid, app.get("name", ""), by, tables)
        return result

    def reject(self, entity: Entity, by: int, userid: int,
               tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildRejectApply by *by* (permission "approve"); the applicant is told."""
        code = self._check_actor(entity, by, "approve", tables)
        if code != E.OK:
            return self._result(code)
        if _applications(entity).pop(str(userid), None) is None:
            return self._result(E.GUILD_NO_APPLICATION)
        entity.mark_dirty()
        return self._result(notify=[self._note(entity, [userid], EV.GUILD_APPLY_REJECTED,
                                               userid, by)])

    def _check_actor(self, entity: Entity, by: int, permission: str | None,
                     tables: Mapping[str, Any]) -> int:
        if not self.exists(entity) or self.role_of(entity, by) is None:
            return E.GUILD_NOT_IN_GUILD
        if permission is not None and not self.may(entity, by, permission, tables):
            return E.GUILD_NO_PERMISSION
        return E.OK

    def _remove(self, entity: Entity, userid: int) -> None:
        del _members(entity)[str(userid)]
        self._queue(entity, userid, 0, join=False)

    def _leaving(self, entity: Entity, userid: int) -> bool:
        """*userid* is out of the guild but its rolecity has not been told yet."""
        entry = entity.components.get("outbox", {}).get(str(userid))
        return entry is not None and not entry["join"] and \
            str(userid) not in entity.components.get("members", {})

    def leave(self, entity: Entity, userid: int, tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildLeave: the leader may not (transfer or disband first). A repeat while the
        player's rolecity was not told yet hands the entry again."""
        if self._leaving(entity, userid):
            return self._result(deliver=[userid])
        code = self._check_actor(entity, userid, None, tables)
        if code != E.OK:
            return self._result(code)
        if self.role_of(entity, userid) == LEADER:
            return self._result(E.GUILD_LEADER_CANNOT_LEAVE)
        to = self.member_ids(entity)
        self._remove(entity, userid)
        return self._result(deliver=[userid],
                            notify=[self._note(entity, to, EV.GUILD_LEFT, userid)])

    def kick(self, entity: Entity, by: int, userid: int,
             tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildKick by *by* (permission "kick") of a member of a lower role."""
        code = self._check_actor(entity, by, "kick", tables)
        if code != E.OK:
            return self._result(code)
        role = self.role_of(entity, userid)
        if role is None and self._leaving(entity, userid):
            return self._result(deliver=[userid])  # a repeat: hand the entry again
        if role is None or ROLES[role] >= ROLES[self.role_of(entity, by) or MEMBER]:
            return self._result(E.GUILD_NOT_A_MEMBER)
        to = self.member_ids(entity)
        self._remove(entity, userid)
        return self._result(deliver=[userid],
                            notify=[self._note(entity, to, EV.GUILD_KICKED, userid, by, role)])

    def set_role(self, entity: Entity, by: int, userid: int, role: int,
                 tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildSetRole by *by* (permission "set_role"): officer or member only."""
        code = self._check_actor(entity, by, "set_role", tables)
        if code != E.OK:
            return self._result(code)
        new = PB_ROLE.get(role)
        if new not in (OFFICER, MEMBER):
            return self._result(E.GUILD_BAD_ROLE)
        member = _members(entity).get(str(userid))
        if member is None or member["role"] == LEADER or userid == by:
            return self._result(E.GUILD_NOT_A_MEMBER)
        if member["role"] != new:
            member["role"] = new
            entity.mark_dirty()
        return self._result(notify=[self._note(entity, self.member_ids(entity),
                                               EV.GUILD_ROLE_CHANGED, userid, by, new)])

    def transfer_leader(self, entity: Entity, by: int, userid: int,
                        tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildTransferLeader by the leader (permission "transfer"): *userid* leads, the
        old leader becomes an officer."""
        code = self._check_actor(entity, by, "transfer", tables)
        if code != E.OK:
            return self._result(code)
        if self.role_of(entity, by) != LEADER:
            return self._result(E.GUILD_NO_PERMISSION)
        member = _members(entity).get(str(userid))
        if member is None or userid == by or str(userid) in _outbox(entity):
            return self._result(E.GUILD_NOT_A_MEMBER)
        member["role"] = LEADER
        _members(entity)[str(by)]["role"] = OFFICER
        entity["leader"] = userid
        entity.mark_dirty()
        return self._result(notify=[self._note(entity, self.member_ids(entity),
                                               EV.GUILD_LEADER_CHANGED, userid, by, LEADER)])

    def disband(self, entity: Entity, by: int, tables: Mapping[str, Any]) -> dict[str, Any]:
        """GuildDisband (permission "disband"): everyone leaves; the caller frees the
        name (``result["name_key"]``). A repeat by the leader who disbanded it hands the
        entries its members' rolecities were not told yet."""
        if entity.get("disbanded") and entity.get("leader") == by:
            pending = [e["userid"] for e in self.outbox(entity) if not e["join"]]
            return {**self._result(deliver=pending),
                    "name_key": self.name_key(entity.get("name", ""))}
        code = self._check_actor(entity, by, "disband", tables)
        if code != E.OK:
            return self._result(code)
        to = self.member_ids(entity)
        for userid in to:
            self._remove(entity, userid)
        self._dissolve(entity)
        return {**self._result(deliver=to, notify=[self._note(entity, to, EV.GUILD_DISBANDED,
                                                              by, by)]),
                "name_key": self.name_key(entity.get("name", ""))}

    def _dissolve(self, entity: Entity) -> None:
        entity["disbanded"] = True
        _applications(entity).clear()
        entity.mark_dirty()

    # -- the player's side ---------------------------------------------------------------

    def rolecity_set(self, entity: Entity, guildid: int, only_if: int, tid: str,
                     join: bool) -> dict[str, Any]:
        """On the player's rolecity entity: the outbox entry *tid* of guild *only_if*.

        A join takes the player into *guildid* unless the player is in another guild
        (``conflict``); a leave (guildid 0) takes the player out only if they are in
        *only_if*. Each change adds a ``guild`` transfer ``{"guildid", "seq"}`` to the
        ledger (the caller saves before answering). Idempotent by *tid*.
        ``{"result": "ok" | "conflict", "added": bool, "guildid": now}``."""
        comp = entity.component(self.name)
        done: dict[str, str] = comp.setdefault("done", {})
        current = int(comp.get("guildid", 0))
        if tid in done:
            return {"result": done[tid], "added": False, "guildid": current}
        target = current
        if join:
            result = "conflict" if current not in (0, guildid) else "ok"
            if result == "ok":
                target = guildid
        else:
            result = "ok"
            if current == only_if:
                target = 0
        added = target != current
        if added:
            seq = int(comp.get("seq", 0)) + 1
            comp["guildid"], comp["seq"] = target, seq
            transfer.add(entity, LEDGER, "guild", {"guildid": target, "seq": seq})
        done[tid] = result
        while len(done) > DONE_KEEP:
            del done[next(iter(done))]
        entity.mark_dirty()
        return {"result": result, "added": added, "guildid": target}

    def apply_ledger(self, entity: Entity, items: Mapping[str, Any]) -> None:
        """On the online player: apply a ``guild`` transfer (newer ``seq`` only)."""
        guildid, seq = items["guildid"], items["seq"]
        if type(guildid) is not int or type(seq) is not int or guildid < 0:
            raise ValueError(f"bad guild transfer {dict(items)!r}")
        if seq > entity.get("guild_seq", 0):
            entity["guildid"] = guildid
            entity["guild_seq"] = seq

    # -- guild chat ------------------------------------------------------------------------

    def chat_add(self, entity: Entity, userid: int, message: Mapping[str, Any]) -> dict[str, Any]:
        """Keep a guild chat message (the last CHAT_KEEP); ``{"code", "members",
        "message"}``; CHAT_NOT_IN_GUILD for a non-member. Not saved here (periodic)."""
        if not self.exists(entity) or str(userid) not in entity.components.get("members", {}):
            return {"code": int(E.CHAT_NOT_IN_GUILD), "members": [], "message": {}}
        msg = {k: v for k, v in message.items() if k in CHAT_FIELDS}
        msg.update(channel=int(pb.ChatChannel.CHAT_GUILD), guild_id=entity.id, from_userid=userid)
        msg.setdefault("time_ms", _now_ms())
        history = entity.component("chat").setdefault("messages", [])
        history.append(msg)
        del history[:-CHAT_KEEP]
        entity.mark_dirty()
        return {"code": int(E.OK), "members": self.member_ids(entity), "message": msg}

    def chat_history(self, entity: Entity, userid: int) -> list[dict[str, Any]]:
        """The guild's last messages, oldest first; NotAMember for others."""
        if not self.exists(entity) or str(userid) not in entity.components.get("members", {}):
            raise NotAMember(f"{userid} is not in guild {entity.id}")
        return list(entity.components.get("chat", {}).get("messages", []))


system = GuildSystem()
