"""The merge of region *from* into region *into*, on storage.

Every document of ``region<from>`` is written into ``region<into>``; then the source's are
deleted. Ids that carry a userid or a guildid keep their low 16 bits (the birth region), so
they never collide and copy over unchanged; the cluster finds them afterwards through the
region alias (``{from: into}``, :mod:`rltwist.merge.aliases`). The per-region indexes need
rules:

* **Player names** (collection ``names``, unique per region): a source player whose name
  key is taken in the target is renamed ``<name>.s<from>`` (``<name>.s<from>.2``, ``.3``
  … while that is taken too). The new name is written where a name lives: the player's
  ``roledb`` document (the truth; fenced, see below), its rolecity entity, the name
  index and the member lists of the merged guilds. The player gets a notice mail
  (``RENAME_NOTICE``) in the mailbox.
* **Guild names** (``guild_names``): the same rule; the guild's leader gets the notice.
* **Region chat** (``chat_channels``, channel ``region<sid>`` on the map): the merged
  region's players chat on the target's channel once their city is on the target map, so
  the merged channel's messages join the target's (in time order, the channel's last
  ``chat_history`` kept).
* **Per-player books on the map** (``marchbooks``: what marches bring home, waiting for
  the player's pull): a player with a book on both maps (its city moved between them
  before) gets one book with the entries of both (transfer ids carry their map, so they
  never clash); the target's wins for an id present in both.
* **Unknown collections** (added by features after this was written) make the plan
  refuse the merge before anything is written, unless the operator says they may be
  copied unchanged (``copy_unknown``, ``rl-merge --copy-unknown``); even then an id that
  exists in both regions refuses (such data needs a rule here).
* **Stale name keys** (a rename interrupted by a crash can leave a player's old key in
  the index until its next Auth): a source key that collides with the target's and is not
  its owner's name is not copied; the owner's real name decides the rename.
* **Counters** are not copied: guild ids and userids carry their region, LRU fencing
  generations of the target stay valid (copied documents are stored with generation 0).
* **The world map** (collection ``world``: one document per entity, ids unique per map,
  and ``meta``): every city of the merged map gets a new id above the target's
  ``last_id`` and a free tile of the target map chosen by the target's own placement
  (``CityPlacer``: the world system's spiral, terrain and spacing); its owner's ``mapid``
  (roledb, fenced) becomes the target. Resource points and monsters of the merged map are
  not copied (the target map spawns its own); march lines refuse the merge (let them
  return first). Without a placer (no world support) a merged map with cities refuses.

Fencing: every player the merge rewrites — those of the source region in ``roledb``, those
living in its database since an earlier merge into it, and those whose ``mapid`` is the
merged map whatever their birth region — gets a new generation (``claim_generation``
stored + 1) before anything is copied, so a stale instance of one of them (a frozen role
node) can no longer save over what the merge writes.

Crash safety: the plan (who is renamed to what) and the step reached are kept in a journal
document (collection ``merge_journal``, id ``str(from)``) in the target database, and a
copy in the source naming the target. Each step is idempotent: copying is upserts of
documents computed from the untouched source, removal deletes what is left, the fence
claims again. A re-run after a crash (``kill -9`` at any point) resumes at the step
reached and ends with the same data as an uninterrupted merge. The source data is deleted
only once every target write has landed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
from twisted.logger import Logger

from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.storage import Backend, Delete, Key, StaleGeneration, Update, Upsert

log = Logger()

role = import_system("rltwist.game.rolesystem", service="merge")
guilds = import_system("rltwist.game.guildsystem", service="merge")
mails = import_system("rltwist.game.mailsystem", service="merge")

JOURNAL = "merge_journal"
"""Collection of the merge journal (target: the plan and step; source: the target)."""
PLAYERS = "player"  # roledb: rltwist.nodes.role.agent.PLAYERS
ROLECITY = "rolecity"  # rltwist.nodes.rolecity.service.ROLECITY
NAMES = "names"
GUILDS = "guild"
GUILD_NAMES = "guild_names"
MAILBOX = "mailbox"
CHANNELS = "chat_channels"  # the map's region chat channel, "region<sid>"
CHAT_HISTORY = 50  # etc/game/chat.toml history: messages a channel keeps
MARCHBOOKS = "marchbooks"  # the map's per-player books of marches (troops coming home)
MOVECITY = "movecity"  # rltwist.nodes.map.movecity.COLLECTION: sagas of cities moved away
WORLD = "world"  # rltwist.nodes.map.world.COLLECTION: one document per world entity
WORLD_META = "meta"

STEPS = ("planned", "fenced", "copied", "removed", "aliased", "done")
BATCH = 500

RENAME_NOTICE = ("Your name changed: regions merged",
                 "Region {from_sid} merged into region {into_sid}. Another player there "
                 "already had the name {old!r}, so yours is now {new!r}. You can rename "
                 "yourself at any time.")
GUILD_NOTICE = ("Your guild's name changed: regions merged",
                "Region {from_sid} merged into region {into_sid}. Another guild there "
                "already had the name {old!r}, so your guild is now {new!r}.")
NOTICE_FROM = "System"

Progress = Callable[[str, str, int, int], None]
"""``progress(step, collection, done, total)``: called as a step advances."""


class CityPlacer(Protocol):
    """Free tiles of the target map for *count* cities: ``(tiles, meta fields)`` given the
    target map's stored world documents ``[(id, doc), ...]``; the meta fields (the
    placement cursor) are set on the target's ``meta``. Fewer tiles than asked: the map
    is full."""

    def __call__(self, target: list[tuple[Key, dict[str, Any]]], count: int
                 ) -> tuple[list[tuple[int, int]], dict[str, Any]]: ...


def _kind(doc: dict[str, Any]) -> str:
    return str((doc.get("attrs") or {}).get("kind") or "unknown")


class MergeRefused(Exception):
    """The merge cannot be done as asked (the message says why); nothing was written."""


def renamed(name: str, sid: int, n: int) -> str:
    """The rename rule: ``<name>.s<sid>``, then ``<name>.s<sid>.<n>`` for n = 2, 3 …"""
    return f"{name}.s{sid}" if n < 2 else f"{name}.s{sid}.{n}"


def _free_name(name: str, sid: int, taken: set[str], key_of: Callable[[str], str]) -> str:
    n = 1
    while True:
        candidate = renamed(name, sid, n)
        key = key_of(candidate)
        if key not in taken:
            taken.add(key)
            return candidate
        n += 1


@attrs.define
class Plan:
    """What the merge will do, decided once (before any write) and kept in the journal, so
    a re-run renames exactly the same players and guilds."""

    from_sid: int
    into_sid: int
    #: every player of the source region with a roledb document (fenced)
    players: list[int]
    #: userid -> [old name, new name]
    player_renames: dict[int, list[str]]
    #: guildid -> [old name, new name, leader]
    guild_renames: dict[int, list[Any]]
    #: documents per source collection
    collections: dict[str, int]
    guilds: int
    mailboxes: int
    mails: int
    #: collections copied without a rule of their own (``copy_unknown``)
    unknown: list[str]
    #: name index keys of the source not copied: they collide with the target's and are
    #: not their owner's name (left over by an interrupted rename)
    dropped_names: list[str] = attrs.Factory(list)
    dropped_guild_names: list[str] = attrs.Factory(list)
    #: [old id, owner, new id, x, y] of every city moved to the target map
    cities: list[list[int]] = attrs.Factory(list)
    #: fields set on the target map's ``meta`` (its last_id, the placement cursor)
    world_meta: dict[str, Any] = attrs.Factory(dict)
    #: world entities of the merged map not copied, by kind
    world_dropped: dict[str, int] = attrs.Factory(dict)
    #: players (any birth region) whose ``mapid`` is the merged map: fenced, mapid moved
    mapid_players: list[int] = attrs.Factory(list)

    def to_doc(self) -> dict[str, Any]:
        return {"from": self.from_sid, "into": self.into_sid, "players": self.players,
                "player_renames": [[u, *names] for u, names in
                                   sorted(self.player_renames.items())],
                "guild_renames": [[g, *v] for g, v in sorted(self.guild_renames.items())],
                "collections": self.collections, "guilds": self.guilds,
                "mailboxes": self.mailboxes, "mails": self.mails, "unknown": self.unknown,
                "dropped_names": self.dropped_names,
                "dropped_guild_names": self.dropped_guild_names, "cities": self.cities,
                "world_meta": self.world_meta, "world_dropped": self.world_dropped,
                "mapid_players": self.mapid_players}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Plan:
        return cls(doc["from"], doc["into"], list(doc["players"]),
                   {int(r[0]): [r[1], r[2]] for r in doc["player_renames"]},
                   {int(r[0]): [r[1], r[2], r[3]] for r in doc["guild_renames"]},
                   dict(doc["collections"]), doc["guilds"], doc["mailboxes"], doc["mails"],
                   list(doc["unknown"]), list(doc.get("dropped_names", ())),
                   list(doc.get("dropped_guild_names", ())),
                   [list(c) for c in doc.get("cities", ())], dict(doc.get("world_meta", {})),
                   dict(doc.get("world_dropped", {})), list(doc.get("mapid_players", ())))


@attrs.define
class Report:
    """The outcome of a merge (or of a dry run: what it would do)."""

    plan: Plan
    dry_run: bool
    resumed_from: str | None = None
    step: str = ""
    seconds: float = 0.0
    already_done: bool = False
    #: seconds each step took in this run
    step_seconds: dict[str, float] = attrs.Factory(dict)

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "from": p.from_sid, "into": p.into_sid, "dry_run": self.dry_run,
            "step": self.step, "resumed_from": self.resumed_from,
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
            "already_done": self.already_done, "seconds": round(self.seconds, 3),
            "players": len(p.players), "guilds": p.guilds, "mailboxes": p.mailboxes,
            "mails": p.mails,
            "notices": 0 if self.dry_run else len(p.player_renames) + sum(
                1 for _, _, leader in p.guild_renames.values() if leader),
            "renamed_players": [{"userid": u, "old": o, "new": n}
                                for u, (o, n) in sorted(p.player_renames.items())],
            "renamed_guilds": [{"guildid": g, "old": o, "new": n}
                               for g, (o, n, _) in sorted(p.guild_renames.items())],
            "cities_moved": len(p.cities),
            "cities": [{"id": o, "owner": u, "new_id": n, "x": x, "y": y}
                       for o, u, n, x, y in p.cities],
            "world_dropped": p.world_dropped, "mapid_players": len(p.mapid_players),
            "collections": p.collections, "copied_without_rule": p.unknown,
            "dropped_stale_names": p.dropped_names + p.dropped_guild_names,
        }


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Merger:
    """Merge ``source`` (the database of region *from_sid*) into ``target`` (region
    *into_sid*), renaming in ``roledb``. ``alias`` is awaited once the data is merged (the
    CLI asks master to install the routing alias); ``progress`` sees each step advance.
    Works on any :class:`~rltwist.storage.Backend` (embedded or MongoDB)."""

    def __init__(self, source: Backend, target: Backend, roledb: Backend, from_sid: int,
                 into_sid: int, *, alias: Callable[[int, int], Awaitable[Any]] | None = None,
                 progress: Progress | None = None, batch: int = BATCH,
                 now_ms: Callable[[], int] | None = None, copy_unknown: bool = False,
                 placer: CityPlacer | None = None, chat_history: int = CHAT_HISTORY
                 ) -> None:
        if from_sid == into_sid:
            raise MergeRefused(f"cannot merge region {from_sid} into itself")
        self.source = source
        self.target = target
        self.roledb = roledb
        self.from_sid = from_sid
        self.into_sid = into_sid
        self.alias = alias
        self.progress: Progress = progress or _no_progress
        self.batch = batch
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.key = str(from_sid)
        self.copy_unknown = copy_unknown
        self.placer = placer
        self.chat_history = chat_history

    # -- the plan ---------------------------------------------------------------------------

    async def make_plan(self) -> Plan:
        """Read both regions and decide every rename; raises :class:`MergeRefused` for data
        that has no merge rule (an id in both databases of a collection without a rule)."""
        src_colls = [c for c in await self.source.collections() if c != JOURNAL]
        counts: dict[str, int] = {}
        unknown: list[str] = []
        conflicts: list[str] = []
        mailboxes = mails_n = guilds_n = 0
        for coll in src_colls:
            docs = await self.source.find(coll, {})
            counts[coll] = len(docs)
            self.progress("plan", coll, len(docs), len(docs))
            if coll == MOVECITY:
                live = [k for k, d in docs if _move_live(d)]
                # a move of the target's whose destination is the merged map: its saga
                # would commit on a map that no longer exists
                live += [k for k, d in await self.target.find(coll, {})
                         if _move_live(d) and _saga(d).get("dst") == self.from_sid]
                if live:
                    raise MergeRefused(
                        f"moves of cities are not finished for players {sorted(live)[:10]} "
                        "(nothing was written): start both regions' map nodes until the "
                        "sagas end and the players took their moves (they do at their next "
                        "login), then stop them and merge again")
                continue
            if coll in (NAMES, GUILD_NAMES, WORLD, MARCHBOOKS):
                continue
            if coll == MAILBOX:
                mailboxes = len(docs)
                mails_n = sum(len(d.get("components", {}).get(mails.name, {})
                                  .get("mails", ())) for _, d in docs)
            if coll == GUILDS:
                guilds_n = sum(1 for _, d in docs if not d.get("attrs", {}).get("disbanded"))
            if coll not in _KNOWN:
                unknown.append(coll)
            ids = {k for k, _ in docs}
            clash = [k for k, _ in await self.target.find(coll, {}) if k in ids]
            if clash:
                conflicts.append(f"{coll}: {sorted(map(str, clash))[:5]}")
        if conflicts:
            raise MergeRefused(
                "documents with the same id exist in both regions and there is no merge rule "
                "for them (nothing was written): " + "; ".join(conflicts))
        if unknown and not self.copy_unknown:
            raise MergeRefused(
                f"region {self.from_sid} has collections this merge has no rule for: "
                f"{', '.join(unknown)} (nothing was written). If their documents may be "
                "copied unchanged (ids unique across regions, no per-region meaning), run "
                "again with --copy-unknown")
        role_docs = {k: str(d.get("attrs", {}).get("name") or "")
                     for k, d in await self.roledb.find(
                         PLAYERS, {"attrs.server_id": self.from_sid}) if isinstance(k, int)}
        # players living in this database with another birth region: merged into it before
        await self._add_residents(role_docs, src_colls)
        players = sorted(role_docs)

        async def player_name(userid: Key, index_doc: dict[str, Any]) -> str:
            if isinstance(userid, int) and role_docs.get(userid):
                return role_docs[userid]
            return str(index_doc.get("name") or "")

        player_renames, dropped_names = await self._renames(
            NAMES, role.name_key, player_name, role_docs)
        guild_renames: dict[int, list[Any]] = {}
        renames, dropped_guild_names = await self._renames(GUILD_NAMES, guilds.name_key,
                                                           self._guild_name)
        for gid, (old, new) in renames.items():
            doc = await self.source.get(GUILDS, gid) or {}
            guild_renames[gid] = [old, new, doc.get("attrs", {}).get("leader", 0)]
        plan = Plan(self.from_sid, self.into_sid, players, player_renames, guild_renames,
                    counts, guilds_n, mailboxes, mails_n, unknown, dropped_names,
                    dropped_guild_names)
        await self._plan_world(plan, WORLD in src_colls)
        return plan

    async def _plan_world(self, plan: Plan, has_world: bool) -> None:
        """Cities of the merged map to free tiles of the target's; who changes map."""
        movers = {k for k, _ in await self.roledb.find(PLAYERS, {"attrs.mapid": self.from_sid})
                  if isinstance(k, int)}
        if has_world:
            source = await self.source.find(WORLD, {})
            cities = sorted((k, d) for k, d in source
                            if k != WORLD_META and _kind(d) == "city" and isinstance(k, int))
            dropped: dict[str, int] = {}
            for k, d in source:
                if k != WORLD_META and _kind(d) != "city":
                    dropped[_kind(d)] = dropped.get(_kind(d), 0) + 1
            if dropped.get("march"):
                raise MergeRefused(
                    f"{dropped['march']} march lines are out on map {self.from_sid}: start "
                    f"region {self.from_sid}'s map node, let them come back (or recall "
                    "them), stop it again, then merge (nothing was written)")
            if cities and self.placer is None:
                raise MergeRefused(
                    f"map {self.from_sid} has {len(cities)} cities and this rl-merge has no "
                    "placement for the target map (nothing was written)")
            if cities:
                assert self.placer is not None
                target = await self.target.find(WORLD, {})
                meta = next((d for k, d in target if k == WORLD_META), {})
                last = max([int((meta.get("attrs") or {}).get("last_id", 0))]
                           + [k for k, _ in target if isinstance(k, int)])
                tiles, meta_fields = self.placer(target, len(cities))
                if len(tiles) < len(cities):
                    raise MergeRefused(
                        f"map {self.into_sid} has free tiles for {len(tiles)} of the "
                        f"{len(cities)} cities of map {self.from_sid} (nothing was written)")
                for i, ((old, doc), (x, y)) in enumerate(zip(cities, tiles, strict=False), 1):
                    owner = int((doc.get("attrs") or {}).get("owner") or 0)
                    plan.cities.append([old, owner, last + i, int(x), int(y)])
                    if owner:
                        movers.add(owner)
                plan.world_meta = {"attrs.last_id": last + len(cities),
                                   **{f"attrs.{k}": v for k, v in meta_fields.items()}}
            plan.world_dropped = dropped
        plan.mapid_players = sorted(movers)

    async def _add_residents(self, role_docs: dict[int, str], colls: list[str]) -> None:
        """Add to *role_docs* (``{userid: name}``) the players whose rolecity entity lives
        in the source database but who were born elsewhere (a region merged into this one
        earlier: their ids carry that region)."""
        if ROLECITY not in colls:
            return
        for key, _ in await self.source.find(ROLECITY, {}):
            if isinstance(key, int) and key not in role_docs:
                doc = await self.roledb.get(PLAYERS, key)
                if doc is not None:
                    role_docs[key] = str(doc.get("attrs", {}).get("name") or "")

    async def _guild_name(self, guildid: Key, index_doc: dict[str, Any]) -> str:
        doc = await self.source.get(GUILDS, guildid) or {}
        return str(doc.get("attrs", {}).get("name") or index_doc.get("name") or "")

    async def _renames(self, coll: str, key_of: Callable[[str], str],
                       name_of: Callable[[Key, dict[str, Any]], Awaitable[str]],
                       names: dict[int, str] | None = None
                       ) -> tuple[dict[int, list[str]], list[str]]:
        """``(renames, dropped)`` for the name index *coll*: owner -> [old, new] for every
        source owner whose name's key another owner holds in the target (also a player
        in *names*, ``{userid: name}``, whose own index entry is missing); and the source
        keys that collide but are not their owner's name (left over by a crashed rename:
        the target's entry stays, the next Auth reconciles). New names avoid every key of
        both regions and each other."""
        target = {k: d.get("owner") for k, d in await self.target.find(coll, {})}
        source = await self.source.find(coll, {})
        taken = {str(k) for k in target} | {str(k) for k, _ in source}
        out: dict[int, list[str]] = {}
        dropped: list[str] = []
        for key, doc in sorted(source, key=lambda kd: str(kd[0])):
            owner = doc.get("owner")
            if key not in target or target[key] == owner:
                continue
            name = await name_of(owner, doc) if isinstance(owner, int) else ""
            if isinstance(owner, int) and name and key_of(name) == key:
                if owner not in out:
                    out[owner] = [name, _free_name(name, self.from_sid, taken, key_of)]
            else:
                dropped.append(str(key))
        for owner, name in sorted((names or {}).items()):
            want = key_of(name) if name else None
            if want is not None and owner not in out and want in target \
                    and target[want] != owner:
                out[owner] = [name, _free_name(name, self.from_sid, taken, key_of)]
        return out, dropped

    # -- the run ----------------------------------------------------------------------------

    async def run(self, dry_run: bool = False) -> Report:
        """Merge (or, *dry_run*, only plan and report). Resumes an interrupted merge from
        its journal; a merge already done reports so and only re-installs the alias."""
        started = time.monotonic()
        src_journal = await self.source.get(JOURNAL, self.key)
        if src_journal is not None and src_journal.get("into") != self.into_sid:
            raise MergeRefused(f"region {self.from_sid} is being (or was) merged into region "
                               f"{src_journal.get('into')}, not {self.into_sid}: finish that "
                               "merge first")
        journal = await self.target.get(JOURNAL, self.key)
        if journal is None and src_journal is not None:
            raise MergeRefused(f"region {self.from_sid}'s journal names region "
                               f"{self.into_sid} but the target has no journal: the "
                               "databases do not belong together")
        if journal is None:
            t = time.monotonic()
            plan = await self.make_plan()
            report = Report(plan, dry_run)
            report.step_seconds["plan"] = time.monotonic() - t
            if dry_run:
                report.step = "planned (dry run: nothing written)"
                report.seconds = time.monotonic() - started
                return report
            await self.target.upsert(JOURNAL, self.key, {
                "from": self.from_sid, "into": self.into_sid, "step": "planned",
                "plan": plan.to_doc(), "started_ms": self.now_ms(),
                "updated_ms": self.now_ms()})
            await self.source.upsert(JOURNAL, self.key, {
                "from": self.from_sid, "into": self.into_sid, "step": "planned",
                "started_ms": self.now_ms()})
            step = "planned"
            crashpoint("merge_after_plan")
        else:
            plan = Plan.from_doc(journal["plan"])
            step = journal["step"]
            report = Report(plan, dry_run, resumed_from=step, already_done=step == "done")
            if dry_run:
                report.step = f"{step} (dry run: a run resumes from here)"
                report.seconds = time.monotonic() - started
                return report
            log.info("merge {f} -> {t}: resuming after step {step}", f=self.from_sid,
                     t=self.into_sid, step=step)
        if _before(step, "fenced"):
            t = time.monotonic()
            await self._fence(plan)
            step = await self._advance("fenced")
            report.step_seconds["fence"] = time.monotonic() - t
        if _before(step, "copied"):
            t = time.monotonic()
            await self._copy(plan)
            step = await self._advance("copied")
            report.step_seconds["copy"] = time.monotonic() - t
        if _before(step, "removed"):
            t = time.monotonic()
            await self._remove()
            step = await self._advance("removed")
            report.step_seconds["remove"] = time.monotonic() - t
        if _before(step, "aliased") or step == "done":
            # also when done: a re-run re-installs an alias master may have lost
            if self.alias is not None:
                await self.alias(self.from_sid, self.into_sid)
            if step != "done":
                step = await self._advance("aliased")
        if step != "done":
            step = await self._advance("done")
            await self.source.upsert(JOURNAL, self.key, {
                "from": self.from_sid, "into": self.into_sid, "step": "done",
                "done_ms": self.now_ms()})
        report.step = step
        report.seconds = time.monotonic() - started
        return report

    async def _advance(self, step: str) -> str:
        await self.target.update(JOURNAL, self.key, {"step": step, "updated_ms": self.now_ms()})
        log.info("merge {f} -> {t}: step {step} done", f=self.from_sid, t=self.into_sid,
                 step=step)
        crashpoint(f"merge_after_{step}")
        return step

    # -- steps ------------------------------------------------------------------------------

    async def _fence(self, plan: Plan) -> None:
        """A new generation for every source player; renamed ones saved with the new name
        under it (the roledb document is the truth of a player's name)."""
        everyone = sorted(set(plan.players) | set(plan.mapid_players))
        total = len(everyone)
        pending: list[tuple[Key, dict[str, Any], int]] = []
        for i, userid in enumerate(everyone, 1):
            stored = await self.roledb.get_entity(PLAYERS, userid)
            if stored is None:
                continue
            generation = stored.generation + 1
            for _ in range(5):
                try:
                    claimed = await self.roledb.claim_generation(PLAYERS, userid, generation)
                    break
                except StaleGeneration as e:  # someone claimed meanwhile: go above it
                    generation = (e.stored or generation) + 1
            else:
                raise MergeRefused(f"player {userid} keeps being claimed by another "
                                   "instance: is a role node still serving region "
                                   f"{self.from_sid}'s players?")
            rename = plan.player_renames.get(userid)
            doc = claimed.doc
            if "attrs" in doc:
                changed = False
                if rename is not None and doc["attrs"].get("name") != rename[1]:
                    doc["attrs"]["name"] = rename[1]
                    changed = True
                if doc["attrs"].get("mapid") == self.from_sid:
                    doc["attrs"]["mapid"] = self.into_sid
                    changed = True
                if changed:
                    pending.append((userid, doc, generation))
            if len(pending) >= self.batch or (i == total and pending):
                await self._save_players(pending)
                pending = []
            if i % 200 == 0 or i == total:
                self.progress("fence", PLAYERS, i, total)

    async def _save_players(self, items: list[tuple[Key, dict[str, Any], int]]) -> None:
        """Fenced saves of claimed players (one transaction); a refusal means an instance
        claimed one of them after the merge did: stop (a re-run fences it again)."""
        refused = [r for r in await self.roledb.save_entities(PLAYERS, items) if r]
        if refused:
            raise MergeRefused(f"{len(refused)} players were claimed by another instance "
                               f"during the merge (e.g. {refused[0]}): is a role node serving "
                               f"region {self.from_sid}'s players? Run rl-merge again")

    async def _copy(self, plan: Plan) -> int:
        """Write every source document into the target (with the rules); returns how many
        notice mails were written."""
        notices = 0
        now = self.now_ms()
        # mailboxes that receive a notice: renamed players and renamed guilds' leaders
        notes: dict[int, list[tuple[str, str, str]]] = {}
        for userid, (old, new) in plan.player_renames.items():
            title, body = RENAME_NOTICE
            notes.setdefault(userid, []).append((title, body.format(
                from_sid=self.from_sid, into_sid=self.into_sid, old=old, new=new),
                f"merge-{self.from_sid}-name"))
        for gid, (old, new, leader) in plan.guild_renames.items():
            if isinstance(leader, int) and leader:
                title, body = GUILD_NOTICE
                notes.setdefault(leader, []).append((title, body.format(
                    from_sid=self.from_sid, into_sid=self.into_sid, old=old, new=new),
                    f"merge-{self.from_sid}-guild-{gid}"))
        for coll in [c for c in await self.source.collections() if c != JOURNAL]:
            docs = await self.source.find(coll, {})
            if coll == WORLD:
                await self._write(coll, self._world_ops(plan, docs))
                continue
            if coll == MOVECITY:  # finished moves only (the plan refused live ones): history
                continue
            if coll == CHANNELS:
                await self._write(coll, await self._channel_ops(docs))
                continue
            if coll == MARCHBOOKS:
                held = dict(await self.target.find(coll, {}))
                await self._write(coll, [Upsert(coll, k, _union(held.get(k), d))
                                         for k, d in docs])
                continue
            ops = []
            for key, doc in docs:
                op = self._rewrite(plan, coll, key, doc)
                if op is not None:
                    ops.append(op)
            if coll == MAILBOX:
                have = {k for k, _ in docs}
                for i, op in enumerate(ops):
                    if isinstance(op.id, int) and op.id in notes:
                        ops[i] = Upsert(MAILBOX, op.id, self._notify(op.id, op.doc,
                                                                    notes[op.id], now))
                        notices += len(notes[op.id])
                for userid in sorted(set(notes) - have):
                    ops.append(Upsert(MAILBOX, userid, self._notify(userid, None,
                                                                     notes[userid], now)))
                    notices += len(notes[userid])
            await self._write(coll, ops)
        if notes and MAILBOX not in plan.collections:  # a region without any mailbox yet
            ops = [Upsert(MAILBOX, u, self._notify(u, None, n, now)) for u, n in notes.items()]
            notices += sum(len(n) for n in notes.values())
            await self._write(MAILBOX, ops)
        return notices

    def _rewrite(self, plan: Plan, coll: str, key: Key, doc: dict[str, Any]) -> Upsert | None:
        if (coll == NAMES and key in plan.dropped_names) \
                or (coll == GUILD_NAMES and key in plan.dropped_guild_names):
            return None
        if coll == NAMES and doc.get("owner") in plan.player_renames:
            new = plan.player_renames[doc["owner"]][1]
            return Upsert(coll, role.name_key(new), {**doc, "name": new})
        if coll == GUILD_NAMES and doc.get("owner") in plan.guild_renames:
            new = plan.guild_renames[doc["owner"]][1]
            return Upsert(coll, guilds.name_key(new), {**doc, "name": new})
        if coll == ROLECITY and key in plan.player_renames:
            doc.setdefault("attrs", {})["name"] = plan.player_renames[key][1]
        if coll == GUILDS:
            if key in plan.guild_renames:
                doc.setdefault("attrs", {})["name"] = plan.guild_renames[key][1]
            members = doc.get("components", {}).get("members", {})
            for uid, member in members.items():
                rename = plan.player_renames.get(int(uid))
                if rename is not None and isinstance(member, dict):
                    member["name"] = rename[1]
        return Upsert(coll, key, doc)

    async def _channel_ops(self, docs: list[tuple[Key, dict[str, Any]]]) -> list[Upsert]:
        """The merged region's channel joined to the target's; other channels as they are.
        Joining twice (a re-run) gives the same channel: messages are kept once."""
        mine, theirs = f"region{self.from_sid}", f"region{self.into_sid}"
        ops = [Upsert(CHANNELS, k, d) for k, d in docs if k != mine]
        source = dict(docs).get(mine)
        if source is None:
            return ops
        held = await self.target.get(CHANNELS, theirs) or {
            "_id": theirs, "version": 0, "attrs": {}, "components": {}}
        messages: list[dict[str, Any]] = []
        seen: set[str] = set()
        for doc in (held, source):
            for m in (doc.get("components") or {}).get("chat", {}).get("messages", ()):
                key = repr(sorted(m.items()))
                if key not in seen:
                    seen.add(key)
                    messages.append(m)
        messages.sort(key=lambda m: m.get("time_ms", 0))
        comps = dict(held.get("components") or {})
        comps["chat"] = {**comps.get("chat", {}), "messages": messages[-self.chat_history:]}
        ops.append(Upsert(CHANNELS, theirs, {**held, "components": comps}))
        return ops

    def _world_ops(self, plan: Plan, docs: list[tuple[Key, dict[str, Any]]]
                   ) -> list[Upsert | Update]:
        """The moved cities under their new ids and tiles, and the target's meta."""
        by_id = dict(docs)
        ops: list[Upsert | Update] = []
        for old, owner, new, x, y in plan.cities:
            doc = dict(by_id[old])
            attrs_ = dict(doc.get("attrs") or {})
            attrs_.update(x=x, y=y)
            rename = plan.player_renames.get(owner)
            if rename is not None:
                attrs_["name"] = rename[1]
            ops.append(Upsert(WORLD, new, {**doc, "_id": new, "attrs": attrs_}))
        if plan.world_meta:
            ops.append(Update(WORLD, WORLD_META, plan.world_meta))  # no-op if absent
        return ops

    def _notify(self, userid: int, doc: dict[str, Any] | None,
                notes: list[tuple[str, str, str]], now: int) -> dict[str, Any]:
        """The mailbox document of *userid* with the notice mails delivered (by key, so a
        re-run of the copy delivers each once)."""
        entity = Entity.from_doc({**doc, "_id": userid}) if doc else Entity(userid)
        for title, body, key in notes:
            mails.deliver(entity, {"title": title, "body": body, "from": 0,
                                   "from_name": NOTICE_FROM, "key": key}, now)
        return entity.to_doc()

    async def _write(self, coll: str, ops: Sequence[Upsert | Update]) -> None:
        total = len(ops)
        done = 0
        self.progress("copy", coll, 0, total)
        for chunk in _chunks(ops, self.batch):
            await self.target.write_batch(chunk)
            done += len(chunk)
            self.progress("copy", coll, done, total)
            crashpoint("merge_copy_batch")

    async def _remove(self) -> None:
        """Delete every source document (the journal stays: it names the target)."""
        for coll in [c for c in await self.source.collections() if c != JOURNAL]:
            keys = [k for k, _ in await self.source.find(coll, {})]
            total = len(keys)
            done = 0
            for chunk in _chunks(keys, self.batch):
                await self.source.write_batch([Delete(coll, k) for k in chunk])
                done += len(chunk)
                self.progress("remove", coll, done, total)
                crashpoint("merge_remove_batch")


#: collections of the region database with ids unique across regions (userids, guildids,
#: create ids, keys naming their region): copied unchanged after the conflict check
_KNOWN = frozenset({ROLECITY, NAMES, GUILDS, GUILD_NAMES, MAILBOX, WORLD, MARCHBOOKS, MOVECITY,
                    "guild_creates",
                    "chat_private", "chat_channels", "friend_outbox"})


def _saga(doc: dict[str, Any]) -> dict[str, Any]:
    return (doc.get("attrs") or {}).get("saga") or {}


def _move_live(doc: dict[str, Any]) -> bool:
    """A move-city saga document that still matters: the saga runs, or it is done but the
    player has not taken its transfer yet (rltwist.nodes.map.movecity)."""
    step = _saga(doc).get("step")
    if step is None or step == "failed":
        return False
    return step != "done" or bool((doc.get("components") or {}).get("ledger"))


def _union(held: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any]:
    """*doc* (an entity document) with every component entry of *held* (the target's
    document of the same id) added; *held*'s entries win. Idempotent: a re-run gets the
    same document."""
    if not held:
        return doc
    out = {**doc, "components": {k: dict(v) if isinstance(v, dict) else v
                                 for k, v in (doc.get("components") or {}).items()}}
    for name, comp in (held.get("components") or {}).items():
        mine = out["components"].get(name)
        if isinstance(comp, dict) and isinstance(mine, dict):
            mine.update(comp)
        else:
            out["components"][name] = comp
    return out


def _no_progress(step: str, coll: str, done: int, total: int) -> None:
    pass


def _before(step: str, other: str) -> bool:
    return STEPS.index(step) < STEPS.index(other)
