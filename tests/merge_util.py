"""Storage-level seeding of populated regions for the merge tests and bench/regions.py.

Players are written the way the nodes store them (the formats of ``rltwist.nodes.role.
agent.new_player_doc``, the rolecity entity, the name index, ``rltwist.game.mailsystem``,
``rltwist.game.friendsystem`` and ``rltwist.game.guildsystem``), thousands per second, so a
region of 2,000 or 10,000 players is ready in seconds instead of minutes of client logins.
Each seeded player also gets an account (``openid`` -> userid in globaldb), so it can log in
through the client protocol afterwards and find what was seeded.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from rltwist.ecs import import_system
from rltwist.nodes.role.agent import new_player_doc
from rltwist.storage import Backend, Upsert

role = import_system("rltwist.game.rolesystem", service="merge-tests")
guilds = import_system("rltwist.game.guildsystem", service="merge-tests")

#: a seeded player's openid (the dev SDK's token is derived from it)
def openid_of(sid: int, i: int) -> str:
    return f"seed-{sid}-{i}"


@attrs.define
class Seeded:
    """What :func:`seed_region` wrote: userids by index, names, guilds, friends."""

    sid: int
    userids: list[int] = attrs.Factory(list)
    names: dict[int, str] = attrs.Factory(dict)
    guilds: dict[int, str] = attrs.Factory(dict)
    #: guildid -> member userids
    members: dict[int, list[int]] = attrs.Factory(dict)
    #: userid -> friend userids (other regions included)
    friends: dict[int, list[int]] = attrs.Factory(dict)
    mails: int = 0


def _now() -> int:
    return int(time.time() * 1000)


async def seed_region(globaldb: Backend, roledb: Backend, region: Backend, sid: int,
                      players: int, *, first_seq: int, name_prefix: str = "p",
                      shared_names: int = 0, guild_count: int = 0, guild_size: int = 10,
                      shared_guild_names: int = 0, mails_per_player: int = 2,
                      batch: int = 500) -> Seeded:
    """Seed *players* players of region *sid* (userids ``(first_seq + i) << 16 | sid``).

    The first *shared_names* players are named ``shared<i>`` (the same names in every
    region seeded with it: merge collisions), the others ``<name_prefix><sid>_<i>``. Every
    player has *mails_per_player* mails. *guild_count* guilds of *guild_size* members are
    made from the players in order, the first *shared_guild_names* named ``guild<i>`` (the
    others ``g<sid>_<i>``). Friend pairs: player i and i+1 (same region)."""
    out = Seeded(sid)
    now = _now()
    accounts: list[Upsert] = []
    role_docs: list[tuple[int, dict[str, Any], int]] = []
    region_ops: list[Upsert] = []
    for i in range(players):
        uid = (first_seq + i) << 16 | sid
        name = f"shared{i}" if i < shared_names else f"{name_prefix}{sid}_{i}"
        out.userids.append(uid)
        out.names[uid] = name
        accounts.append(Upsert("account", openid_of(sid, i), {"userid": uid,
                                                              "server_id": sid}))
        doc = new_player_doc(uid)
        doc["attrs"]["name"] = name
        role_docs.append((uid, doc, 1))
        region_ops.append(Upsert("names", role.name_key(name),
                                 {"owner": uid, "name": name, "time_ms": now}))
        box = {"next_id": mails_per_player + 1, "keys": {}, "mails": [
            {"id": m + 1, "from": 0, "from_name": "GM", "title": f"welcome {m}",
             "body": f"to {name}", "attachments": {}, "key": None, "time_ms": now,
             "expire_ms": now + 30 * 86_400_000, "read": False, "claim": None}
            for m in range(mails_per_player)]}
        out.mails += mails_per_player
        region_ops.append(Upsert("mailbox", uid, {"_id": uid, "version": 0, "attrs": {},
                                                  "components": {"mail": box}}))
    # friends: i <-> i+1 for even i
    friends: dict[int, dict[str, Any]] = {u: {} for u in out.userids}
    for a, b in zip(out.userids[0::2], out.userids[1::2], strict=False):
        friends[a][str(b)] = {"since_ms": now, "name": out.names[b]}
        friends[b][str(a)] = {"since_ms": now, "name": out.names[a]}
        out.friends.setdefault(a, []).append(b)
        out.friends.setdefault(b, []).append(a)
    # guilds
    guild_of: dict[int, int] = {}
    for g in range(guild_count):
        gid = (first_seq + g) << 16 | sid
        gname = f"guild{g}" if g < shared_guild_names else f"g{sid}_{g}"
        member_ids = out.userids[g * guild_size:(g + 1) * guild_size]
        if not member_ids:
            break
        out.guilds[gid] = gname
        out.members[gid] = member_ids
        members = {str(u): {"role": "leader" if k == 0 else "member", "name": out.names[u],
                            "joined_ms": now} for k, u in enumerate(member_ids)}
        region_ops.append(Upsert("guild", gid, {"_id": gid, "version": 0, "attrs": {
            "name": gname, "leader": member_ids[0], "open": True, "region": sid,
            "created_ms": now}, "components": {"members": members}}))
        region_ops.append(Upsert("guild_names", guilds.name_key(gname),
                                 {"owner": gid, "name": gname, "time_ms": now}))
        for u in member_ids:
            guild_of[u] = gid
    for uid, doc, _ in role_docs:
        comps: dict[str, Any] = {"friends": {"friends": friends[uid],
                                             "ver": {p: 1 for p in friends[uid]}}}
        gid = guild_of.get(uid, 0)
        if gid:
            doc["attrs"]["guildid"] = gid
            doc["attrs"]["guild_seq"] = 1
            comps["guild"] = {"guildid": gid, "seq": 1, "done": {}}
        region_ops.append(Upsert("rolecity", uid, {"_id": uid, "version": 0, "attrs": {
            "userid": uid, "name": out.names[uid], "server_id": sid}, "components": comps}))
    for i in range(0, len(accounts), batch):
        await globaldb.write_batch(accounts[i:i + batch])
    # new accounts (logiccenter's user_seq) must not reuse a seeded userid
    have = await globaldb.incr("user_seq", 0)
    if have < first_seq + players:
        await globaldb.incr("user_seq", first_seq + players - have)
    for i in range(0, len(role_docs), batch):
        await roledb.save_entities("player", role_docs[i:i + batch])
    for i in range(0, len(region_ops), batch):
        await region.write_batch(region_ops[i:i + batch])
    return out


async def befriend(region_a: Backend, a: int, name_a: str, region_b: Backend, b: int,
                   name_b: str) -> None:
    """Make *a* and *b* (of any regions) friends on both sides, as a settled pair."""
    now = _now()
    for region, me, peer, peer_name in ((region_a, a, b, name_b), (region_b, b, a, name_a)):
        doc = await region.get("rolecity", me)
        assert doc is not None, me
        comp = doc.setdefault("components", {}).setdefault("friends", {})
        comp.setdefault("friends", {})[str(peer)] = {"since_ms": now, "name": peer_name}
        comp.setdefault("ver", {})[str(peer)] = 1
        await region.upsert("rolecity", me, doc)


async def seed_cities(region: Backend, roledb: Backend, sid: int, userids: list[int],
                      placer: Any, batch: int = 500) -> int:
    """A city for each of *userids* on map *sid*, placed by *placer* (the map's own
    placement: ``rltwist.merge.world.world_placer``), in the world node's format, and the
    players' ``mapid``; returns how many were placed."""
    existing = await region.find("world", {})
    tiles, meta = placer(existing, len(userids))
    last = max([0] + [k for k, _ in existing if isinstance(k, int)])
    ops: list[Upsert] = []
    for i, (uid, (x, y)) in enumerate(zip(userids, tiles, strict=False), 1):
        ops.append(Upsert("world", last + i, {"_id": last + i, "version": 0, "attrs": {
            "kind": "city", "x": x, "y": y, "owner": uid, "name": "", "level": 1,
            "guildid": 0}, "components": {}}))
    ops.append(Upsert("world", "meta", {"_id": "meta", "version": 0, "attrs": {
        "last_id": last + len(tiles), "city_cursor": meta.get("city_cursor", 0),
        "spawns": 0}, "components": {}}))
    for i in range(0, len(ops), batch):
        await region.write_batch(ops[i:i + batch])
    placed = set(userids[:len(tiles)])
    docs = [(u, d, 1) for u, d in await roledb.find("player", {"attrs.server_id": sid})
            if u in placed]
    for _, d, _ in docs:
        d["attrs"]["mapid"] = sid
    for i in range(0, len(docs), batch):
        await roledb.save_entities("player", docs[i:i + batch])
    return len(tiles)
