"""``rl-chaos run``: a local cluster, bots that play, faults injected one at a time, and the
invariants checked after each one.

Per fault: inject it, wait until the cluster has recovered (every bot online with a
heartbeat answered after the fault ended, a fresh login works, a GM grant and a mail
delivery to each region are acknowledged), go quiet (no new operations; wait for those in
flight), then check

* the ledger (:mod:`rltwist.chaos.ledger`): no acknowledged rename, GM grant, GM mail,
  mail claim, gift, guild membership change, friend request/accept, global mail or gather
  march (troops home + in flight, loads credited once) lost or doubled, and the two sides
  of each (guildid and member list, both friends) agree —
  re-observed for up to ``SETTLE_LIMIT`` seconds while a delivery due after the OK (a
  gift, a global mail, a guild or friend outbox) may still come;
* the served records (:mod:`rltwist.chaos.records`): no player online twice;
* the recovery bounds: players back online within ``ROLE_BOUND`` seconds of a role node's
  death (or freeze); logins working within ``REDIS_BOUND`` seconds of Redis being back;
* a map node killed or frozen with marches in flight on it (the fault waits for some
  before it strikes): every one of them has left the map (home, credited) within
  ``MARCH_HOME_LIMIT`` seconds of the fault's end.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer

from rltwist.chaos import records
from rltwist.chaos.bots import ChaosBot, Env, probe_login
from rltwist.chaos.harness import Harness
from rltwist.chaos.ledger import (
    FAILED,
    GIFT_TITLE,
    GUILD_COST,
    OK,
    UNKNOWN,
    GuildSeen,
    Ledger,
    Loss,
    MailSeen,
    MarchSeen,
    Observed,
    healing,
    summarize,
)
from rltwist.cluster.routing import Routing, birth_region
from rltwist.config import parse_node_name
from rltwist.protocols import pb

#: the chaos cluster merges no regions: node names straight from the ids
ROUTES = Routing()
ROLE_BOUND = 10.0  # s: players back online after a role node death
REDIS_BOUND = 10.0  # s: logins working again after Redis is back
RECOVERY_LIMIT = 60.0  # s: a fault not recovered by then is a violation
#: s: how long a check re-observes while what is missing may still be delivered (the gift
#: retry and the global mail sweep run every 30 s on role nodes, outboxes every 2-10 s)
SETTLE_LIMIT = 45.0
#: GM ops (4 a second) between two global/region mails
GMAIL_EVERY = 40
#: s: a map fault waits this long at most for marches in flight on it before striking
MARCH_WAIT = 30.0
#: s: marches in flight at a map fault must have come home this long after its end
MARCH_HOME_LIMIT = 60.0
MARCH_POLL = 0.5  # s between two looks at a map's marches
#: what the issue promises that the ledger does not cover, and why
NOT_COVERED = [
    "attack marches and battle losses: the bots send gather marches only (a battle's "
    "losses and rewards would make the troops arithmetic depend on its RNG)",
    "march troops at home are read through the bot's own MarchList (no GM /call answers "
    "the player's troops component); marches in flight through GM /call on the map",
    "periodic-save changes (e.g. resource ticks): none exist yet, so no rollback is "
    "exercised; every covered operation is durable at its OK",
    "chat: not durable at its OK by design (accepted for delivery; histories are saved "
    "periodically, docs/social.md), so there is no promise to check",
    "activities (GM schedule, durable at its 200) and the GM mute: not in the ledger",
    "friend reject/remove/block, guild apply/approve/kick/roles/disband: the bots do not "
    "send them (the checks of both sides' agreement would cover them)",
]


@attrs.define
class Fault:
    """One fault: ``inject(run)`` does it (and ends it: restart, thaw) and returns the
    reference times: ``t0`` (injected), ``t_end`` (the fault is over), optionally
    ``role`` (a role node that died or froze) and ``redis_back``."""

    name: str
    inject: Callable[[Run], Awaitable[dict[str, Any]]]
    what: str
    #: the operations whose state the faulty node keeps (bots and the GM driver do them
    #: more often until the fault is recovered)
    focus: tuple[str, ...] = ()


#: node kind -> the operations whose state (or whose path) it holds
FOCUS: dict[str, tuple[str, ...]] = {
    "guild": ("guild",),
    "mail": ("claim", "gift", "gmail"),
    "rolecity": ("friend", "guild"),
    "logiccenter": ("gmail",),
    "map": ("march",),
}


def focus_of(name: str) -> tuple[str, ...]:
    return FOCUS.get(parse_node_name(name)[0], ())


def kill_restart(name: str, down: float = 2.0) -> Fault:
    async def inject(run: Run) -> dict[str, Any]:
        h = run.h
        affected = run.bots_on(name)
        flying = await run.marches_before(name)
        t0 = await h.kill(name)
        await h.sleep(down)
        await h.restart(name)
        ref: dict[str, Any] = {"t0": t0, "t_end": time.monotonic()}
        if parse_node_name(name)[0] == "role":
            ref["role"], ref["affected"] = name, affected
        ref["map"], ref["flying"] = name, flying
        return ref
    return Fault(f"kill -9 {name}", inject, f"SIGKILL {name}, restart it {down:g}s later",
                 focus_of(name))


def redis_empty(down: float = 2.0) -> Fault:
    async def inject(run: Run) -> dict[str, Any]:
        t0 = await run.h.kill_redis()
        await run.h.sleep(down)
        back = await run.h.restart_redis()
        return {"t0": t0, "t_end": back, "redis_back": back}
    return Fault("redis restarted empty", inject,
                 f"SIGKILL redis-server, start it empty on its port {down:g}s later")


def master_and_redis(down: float = 2.0) -> Fault:
    async def inject(run: Run) -> dict[str, Any]:
        h = run.h
        t0 = await h.kill("master")
        await h.kill_redis()
        await h.sleep(down)
        back = await h.restart_redis()
        await h.restart("master")
        return {"t0": t0, "t_end": time.monotonic(), "redis_back": back}
    return Fault("kill -9 master + redis", inject,
                 f"SIGKILL master and redis-server together, restart both {down:g}s later")


def freeze(name: str, seconds: float) -> Fault:
    async def inject(run: Run) -> dict[str, Any]:
        h = run.h
        affected = run.bots_on(name)
        flying = await run.marches_before(name)
        t0 = time.monotonic()
        h.freeze(name)
        await h.sleep(seconds)
        h.thaw(name)
        ref: dict[str, Any] = {"t0": t0, "t_end": time.monotonic()}
        if parse_node_name(name)[0] == "role":
            ref["role"], ref["affected"] = name, affected
        ref["map"], ref["flying"] = name, flying
        return ref
    return Fault(f"SIGSTOP {name} {seconds:g}s", inject, f"freeze {name} for {seconds:g}s",
                 focus_of(name))


def gm_shutdown_restart() -> Fault:
    async def inject(run: Run) -> dict[str, Any]:
        h = run.h
        t0 = time.monotonic()
        codes = await h.gm_shutdown(bound=90)
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            run.notes.append(f"ordered shutdown: nodes that did not exit 0: {bad}")
        await h.start_nodes(h.names)
        return {"t0": t0, "t_end": time.monotonic(), "exit_codes": codes}
    return Fault("GM shutdown + full restart", inject,
                 "POST /shutdown with players online, then start every node again")


def quick_schedule() -> list[Fault]:
    """The CI subset: kill -9 of a role, a map and a mail node, Redis restarted empty, one
    10 s SIGSTOP of a role node."""
    return [kill_restart("role1"), kill_restart("map1"), kill_restart("mail1"),
            redis_empty(), freeze("role2", 10.0)]


def full_schedule() -> list[Fault]:
    kinds = ["master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1",
             "login1"]
    return [*(kill_restart(n) for n in kinds), redis_empty(), master_and_redis(),
            freeze("role2", 20.0), freeze("map2", 10.0), gm_shutdown_restart()]


class Run:
    """One ``rl-chaos run``."""

    def __init__(self, reactor: Any, run_dir: Path, *, bots: int, schedule: list[Fault],
                 say: Callable[[str], None] = print, seed: int | None = None) -> None:
        self.reactor = reactor
        self.say = say
        self.h = Harness(reactor, run_dir, say=say)
        self.schedule = schedule
        self.ledger = Ledger(guild_cost=guild_cost())
        self.n_bots = bots
        self.seed = seed
        self.env: Env | None = None
        self.bots: list[ChaosBot] = []
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.probes: list[tuple[float, str]] = []
        self._reported_losses: set[tuple[str, int, str]] = set()
        self._reported_overlaps: set[tuple[Any, ...]] = set()
        self.settle_limit = SETTLE_LIMIT
        self._gm_running = False
        self._gm_seq = 0
        self._gmail_seq = 0
        self._stop = False

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        h = self.h
        self.say(f"rl-chaos run: starting {len(h.names)} nodes + redis in {h.run_dir}")
        await h.start()
        self.say(f"  cluster up in {time.monotonic() - started:.1f}s: {' '.join(h.names)}")
        env = self.env = Env(self.reactor, h.logins(), h.role_by_port(), self.ledger,
                             social_p=0.15, seed=self.seed)
        token = secrets.token_hex(3)
        self.bots = [ChaosBot(env, i, f"chaos-{token}-{i}", 1 + i % h.regions)
                     for i in range(self.n_bots)]
        for b in self.bots:
            # staggered: logins that all land at once read the same online counts and
            # pick the same role node (the pick counts a player only after its Auth)
            b.start()
            await h.sleep(0.05)
        probe = defer.Deferred.fromCoroutine(self._probe_loop(token))
        gm = defer.Deferred.fromCoroutine(self._gm_loop())
        try:
            await self._until(lambda: all(b.online for b in self.bots), 60,
                              "every bot online at the start")
            env.players = [b.userid for b in self.bots if b.userid is not None]
            self.say(f"  {len(self.bots)} bots online; faults: "
                     f"{', '.join(f.name for f in self.schedule)}")
            env.fault = "warm-up"
            self._gm_running = True
            await h.sleep(3)
            for fault in self.schedule:
                await self._fault(fault)
        finally:
            self._stop = True
            env.stopping = True
            for b in self.bots:
                b.stop()
            await defer.DeferredList([d for d in (probe, gm) if d is not None])
            await defer.DeferredList([b.done for b in self.bots if b.done is not None])
            await h.stop()
        return self.result(time.monotonic() - started)

    async def _fault(self, fault: Fault) -> None:
        env = self.env
        assert env is not None
        env.fault = fault.name
        env.errors.clear()
        env.quiet = False
        env.focus = fault.focus
        self._gm_running = True
        self.say(f"  fault: {fault.name} ({fault.what})")
        row: dict[str, Any] = {"fault": fault.name, "what": fault.what, "violations": []}
        try:
            ref = await fault.inject(self)
        except Exception as e:
            row["violations"].append(f"fault could not be injected/ended: {e}")
            ref = {"t0": time.monotonic(), "t_end": time.monotonic()}
        t0, t_end = ref["t0"], ref["t_end"]
        recovered = await self._recovery(ref, row)
        if "map" in ref:  # the marches in flight when it struck come home (before quiet)
            await self.marches_after(ref["map"], ref["flying"], ref)
            for key in ("marches_at_fault", "marches_home_s"):
                if key in ref:
                    row[key] = ref[key]
            row["violations"] += ref.get("violations", [])
        row["recovery_s"] = None if recovered is None else round(recovered - t0, 2)
        if recovered is None:
            row["violations"].append(f"not recovered within {RECOVERY_LIMIT:g}s of the "
                                     "fault's end")
        # quiet: no new operations, wait for those in flight, then check
        env.quiet = True
        env.focus = ()
        self._gm_running = False
        await self._until(lambda: env.inflight == 0 and self._gm_inflight == 0, 30,
                          "operations in flight to finish")
        row["bot_errors"] = dict(sorted(env.errors.items()))
        row["ops"] = self.ledger.counts(fault.name)
        await self._ledger_row(row)
        overlaps = self._double_online()
        row["double_online"] = [o.describe() for o in overlaps]
        row["violations"] += row["double_online"]
        row["t_fault_end_s"] = round(t_end - t0, 2)
        self.rows.append(row)
        self.say("    " + self._row_line(row))

    async def _recovery(self, ref: dict[str, Any], row: dict[str, Any]) -> float | None:
        """Wait until everything works again; the monotonic time it did (None: not
        within RECOVERY_LIMIT). Fills the bound figures of *row*."""
        t_end = ref["t_end"]
        deadline = t_end + RECOVERY_LIMIT
        affected: list[ChaosBot] = ref.get("affected", [])
        while time.monotonic() < deadline:
            bots_ok = all(b.online and b.last_heartbeat >= t_end for b in self.bots)
            login_ok = self._first_probe_ok(t_end) is not None
            gm_ok = self._gm_ok_after(t_end)
            if bots_ok and login_ok and gm_ok:
                break
            await self.h.sleep(0.1)
        else:
            return None
        done = time.monotonic()
        if "role" in ref:
            back = max((b.online_at for b in affected), default=ref["t0"])
            row["players_back_s"] = round(back - ref["t0"], 2)
            row["affected_players"] = len(affected)
            if back - ref["t0"] > ROLE_BOUND:
                row["violations"].append(f"players back online {back - ref['t0']:.1f}s after "
                                         f"{ref['role']} died/froze (bound {ROLE_BOUND:g}s)")
        if "redis_back" in ref:
            first = self._first_probe_ok(ref["redis_back"])
            assert first is not None
            row["logins_resumed_s"] = round(first - ref["redis_back"], 2)
            if first - ref["redis_back"] > REDIS_BOUND:
                row["violations"].append(f"logins resumed {first - ref['redis_back']:.1f}s "
                                         f"after Redis was back (bound {REDIS_BOUND:g}s)")
        return done

    # -- probes and the GM driver ---------------------------------------------------------

    async def _probe_loop(self, token: str) -> None:
        """A fresh player logs in every half second: when logins work again."""
        env = self.env
        assert env is not None
        n = 0
        while not self._stop:
            n += 1
            result = await probe_login(env, f"probe-{token}-{n}", 1 + n % self.h.regions)
            self.probes.append((time.monotonic(), result))
            await self.h.sleep(0.5)

    def _first_probe_ok(self, after: float) -> float | None:
        return next((t for t, r in self.probes if t >= after and r == "OK"), None)

    _gm_inflight = 0

    async def _gm_loop(self) -> None:
        """GM grants and mails (food attached) to random bots, alternating regions, 4 a
        second; every GMAIL_EVERY-th operation (every fifth of that while a fault hits
        global mail) a global mail or a region mail instead."""
        env = self.env
        assert env is not None
        while not self._stop:
            await self.h.sleep(0.25)
            if not self._gm_running:
                continue
            self._gm_seq += 1
            every = GMAIL_EVERY // 5 if "gmail" in env.focus else GMAIL_EVERY
            if self._gm_seq % every == 0:
                self._gm_inflight += 1
                d = defer.Deferred.fromCoroutine(self._gmail_op())
                d.addBoth(self._gm_done)
                continue
            region = 1 + self._gm_seq % self.h.regions
            targets = [b for b in self.bots if b.userid is not None
                       and birth_region(b.userid) == region]
            if not targets:
                continue
            bot = env.rng.choice(targets)
            kind = "grant" if (self._gm_seq // self.h.regions) % 2 else "mail"
            self._gm_inflight += 1
            d = defer.Deferred.fromCoroutine(self._gm_op(kind, bot))
            d.addBoth(self._gm_done)

    def _gm_done(self, result: Any) -> Any:
        self._gm_inflight -= 1
        return None

    async def _gm_op(self, kind: str, bot: ChaosBot) -> None:
        env = self.env
        assert env is not None and bot.userid is not None
        userid = bot.userid
        fault = env.fault
        if kind == "grant":
            amount = env.rng.randint(1, 999)
            status, result = await self.h.call(ROUTES.rolecity_node(userid), "rolerouter", "grant",
                                               userid, {"gold": amount})
            if status == 200 and isinstance(result, dict):
                outcome = OK if result.get("code") == 0 else FAILED
            else:
                outcome = gm_outcome(status)
            self.ledger.record("grant", userid, amount, outcome, fault,
                               "" if outcome == OK else f"{status} {str(result)[:120]}")
        else:  # the GM route: a system mail with food attached (the bots claim it)
            title = f"chaos-{self._gm_seq}"
            food = env.rng.randint(1, 999)
            status, result = await self.h.gm("POST", f"/players/{userid}/mail", {
                "title": title, "body": "chaos", "key": title,
                "attachments": {"food": food}}, timeout=10.0)
            if status == 200 and isinstance(result, dict) and "mailid" in result:
                outcome = OK
            else:
                outcome = gm_outcome(status)
            self.ledger.record("mail", userid, title, outcome, fault,
                               "" if outcome == OK else f"{status} {str(result)[:120]}",
                               food=food)
        if outcome != OK:
            env.error(f"gm {kind} {status_name(status, result)}")

    async def _gmail_op(self) -> None:
        """One global mail (``POST /mail/global``) or region mail (``POST
        /mail/region/<sid>``), in turn: every bot it targets must get it exactly once."""
        env = self.env
        assert env is not None
        fault = env.fault
        self._gmail_seq += 1
        n = self._gmail_seq
        title = f"gmail-{env.token}-{n}"
        region = n % (self.h.regions + 1)  # 0: every region
        path = f"/mail/region/{region}" if region else "/mail/global"
        status, result = await self.h.gm("POST", path, {"title": title, "body": "chaos",
                                                        "expire_days": 1}, timeout=10.0)
        if status == 200 and isinstance(result, dict) and "gmail" in result:
            outcome = OK
        else:
            outcome = gm_outcome(status)
            env.error(f"gm gmail {status_name(status, result)}")
        self.ledger.record("gmail", 0, title, outcome, fault,
                           "" if outcome == OK else f"{status} {str(result)[:120]}",
                           regions=[region] if region else [])

    def _gm_ok_after(self, t: float) -> bool:
        """A grant and a mail acknowledged for each region after *t*."""
        need = {(k, r) for k in ("grant", "mail") for r in range(1, self.h.regions + 1)}
        for op in reversed(self.ledger.ops):
            if op.t < t:
                break
            if op.outcome == OK:
                need.discard((op.kind, op.region))
        return not need

    # -- checks -------------------------------------------------------------------------------

    async def _ledger_row(self, row: dict[str, Any]) -> None:
        """Check the ledger and put what it finds — each loss, double or one-sided state
        not reported by an earlier fault — in *row* as violations."""
        losses = await self._check_ledger(row)
        new = [loss for loss in losses
               if (loss.kind, loss.userid, loss.what) not in self._reported_losses]
        self._reported_losses |= {(loss.kind, loss.userid, loss.what) for loss in new}
        row["acked_lost"] = [loss.to_json() for loss in new]
        row["allowed_rollbacks"] = []  # nothing periodic-save is exercised (NOT_COVERED)
        row["violations"] += [f"{loss.kind} {loss.what}: player {loss.userid}: "
                              f"{loss.detail}" for loss in new]

    async def _check_ledger(self, row: dict[str, Any]) -> list[Loss]:
        """Observe and check until nothing is missing, a double is seen (it never heals)
        or ``settle_limit`` passed; the losses of the last check (``row["settle_s"]``: how
        long it took)."""
        start = time.monotonic()
        while True:
            observed, guilds = await self._observe_all()
            losses = self.ledger.check(observed, guilds)
            waited = time.monotonic() - start
            if not losses or not healing(losses) or waited > self.settle_limit:
                row["settle_s"] = round(waited, 1)
                self.seen = coverage(observed, guilds)
                row["checked"] = self.seen
                return losses
            # hand the guilds' outboxes on now instead of at their next 10 s retry
            for g in guilds.values():
                if g.outbox:
                    await self.h.call(ROUTES.guild_node(g.guildid), "guildrouter",
                                      "deliver", g.guildid)
            await self.h.sleep(2.0)

    async def _observe_all(self) -> tuple[dict[int, Observed], dict[int, GuildSeen]]:
        """Every bot's player (name, resources and guildid from its online instance,
        grants still in rolecity's ledger, mailbox, friend lists) and every guild the
        ledger or a player names."""
        observed: dict[int, Observed] = {}
        sem = defer.DeferredSemaphore(8)
        bots = [b for b in self.bots if b.userid is not None]

        async def one(bot: ChaosBot) -> None:
            seen = await self._observe(bot)
            if seen is not None:
                observed[seen.userid] = seen

        def start(bot: ChaosBot) -> defer.Deferred[None]:
            return defer.Deferred.fromCoroutine(one(bot))

        await defer.DeferredList([sem.run(start, b) for b in bots])
        guilds: dict[int, GuildSeen] = {}
        for gid in sorted(self.ledger.guild_ids() | {o.guildid for o in observed.values()}):
            if gid <= 0:
                continue
            status, info = await self.h.call(ROUTES.guild_node(gid), "guildrouter", "call",
                                             gid, "info")
            if status == 200 and isinstance(info, dict) and info.get("owner") is not None:
                guilds[gid] = GuildSeen(gid, int(info["owner"]),
                                        frozenset(int(u) for u in info.get("members", [])),
                                        frozenset(int(u) for u in info.get("outbox", [])),
                                        bool(info.get("disbanded")))
        return observed, guilds

    async def _observe(self, bot: ChaosBot, attempts: int = 20) -> Observed | None:
        h = self.h
        assert bot.userid is not None
        userid = bot.userid
        for _ in range(attempts):
            node = bot.node
            if not bot.online or node is None:
                await h.sleep(0.5)
                continue
            await h.call(node, "gateway", "apply_grants", userid)
            if bot.userid is not None and self.env is not None and self.env.marches:
                await h.call(node, "marchpull", "pull", userid)
            # the marches listed around the read of the player's resources (see _troops)
            listed = await self._march_list(bot)
            status, info = await h.call(node, "gateway", "player_info", userid)
            if status != 200 or not isinstance(info, dict) or info.get("state") != "online":
                await h.sleep(0.5)
                continue
            status, ledger = await h.call(ROUTES.rolecity_node(userid), "rolerouter", "call",
                                          userid,
                                          "transfers")
            if status != 200 and not (isinstance(ledger, dict)
                                      and ledger.get("kind") == "EntityNotFound"):
                await h.sleep(0.5)
                continue
            entries = ledger if isinstance(ledger, list) else []
            pending = sum(int(e.get("items", {}).get("gold", 0))
                          for e in entries if e.get("kind") == "grant")
            if entries:  # a grant taken and applied but not yet confirmed counts twice,
                # a guild change not applied shows the old guildid: pull again
                await h.sleep(0.3)
                continue
            status, mails = await h.call(ROUTES.mail_node(userid), "mailrouter", "call", userid,
                                         "list")
            if status != 200 or not isinstance(mails, list):
                await h.sleep(0.5)
                continue
            status, friends = await h.call(ROUTES.rolecity_node(userid), "friends", "list",
                                           userid)
            if status != 200 or not isinstance(friends, dict):
                await h.sleep(0.5)
                continue
            troops = await self._troops(bot, listed)
            if troops is None:
                await h.sleep(0.5)
                continue
            attrs_ = info.get("attrs", {})
            ids = {part: frozenset(int(f["userid"]) for f in friends.get(part, []))
                   for part in ("friends", "requests_in", "requests_out")}
            return Observed(
                userid, str(attrs_.get("name", "")), int(attrs_.get("gold", 0)), pending,
                tuple(MailSeen(int(m["id"]), str(m.get("title", "")), int(m.get("from") or 0),
                               bool(m.get("claimed"))) for m in mails),
                food=int(attrs_.get("food", 0)), oil=int(attrs_.get("oil", 0)),
                guildid=int(attrs_.get("guildid") or 0), friends=ids["friends"],
                requests_in=ids["requests_in"], requests_out=ids["requests_out"],
                troops=troops[0], marches=troops[1])
        return None

    async def _march_list(self, bot: ChaosBot) -> Any:
        """The bot's own MarchList answer (None: not OK, or the marches are not used)."""
        conn = bot.conn
        if self.env is None or not self.env.marches or conn is None:
            return None
        try:
            r: Any = await conn.request(pb.MarchList())
        except Exception:
            return None
        return r if r.code == pb.ErrorCode.OK else None

    async def _troops(self, bot: ChaosBot, before: Any) -> tuple[
            tuple[tuple[str, int], ...] | None, tuple[MarchSeen, ...]] | None:
        """Troops home and marches in flight, from a MarchList taken after the player's
        resources were read, valid only if the one taken before lists the same marches:
        a march listed by both was not home in between (its load not yet credited), one
        listed by neither had left the map already (credited, or still to pull: a loss
        that heals). None: look again. ``(None, ())`` when marches are not used."""
        if self.env is None or not self.env.marches:
            return None, ()
        after = await self._march_list(bot)
        if before is None or after is None:
            return None
        ids = [{int(m.line.march_id) for m in r.marches} for r in (before, after)]
        if ids[0] != ids[1]:
            return None
        home = tuple(sorted((t.type, int(t.count)) for t in after.home_troops))
        marches = tuple(MarchSeen(int(m.line.march_id),
                                  tuple(sorted((t.type, int(t.count)) for t in m.troops)),
                                  tuple(sorted((k, int(v)) for k, v in m.load.items())))
                        for m in after.marches)
        return home, marches

    # -- marches at a map fault ------------------------------------------------------------

    def _map_bots(self, name: str) -> list[ChaosBot]:
        """The bots whose city is on map node *name* (their birth region's map)."""
        kind, region = parse_node_name(name)
        if kind != "map":
            return []
        return [b for b in self.bots if b.userid is not None and b.server_id == region]

    async def _in_flight(self, name: str, bots: list[ChaosBot]) -> dict[int, int] | None:
        """march id -> owner of every march in flight on map *name* (GM ``/call`` of its
        ``march`` service's ``list``); None when it did not answer."""
        flying: dict[int, int] = {}
        for b in bots:
            status, found = await self.h.call(name, "march", "list", b.userid)
            if status != 200 or not isinstance(found, dict):
                return None
            for view in found.get("marches") or []:
                flying[int(view["id"])] = int(b.userid or 0)
        return flying

    async def marches_before(self, name: str) -> dict[int, int]:
        """Before a fault of map *name*: wait (at most ``MARCH_WAIT`` s, bots favouring
        marches meanwhile) until marches are in flight on it; those in flight then."""
        bots = self._map_bots(name)
        if not bots:
            return {}
        deadline = time.monotonic() + MARCH_WAIT
        # bounded by the clock and by the number of looks (each at least MARCH_POLL apart)
        for _ in range(int(MARCH_WAIT / MARCH_POLL)):
            flying = await self._in_flight(name, bots)
            if flying or time.monotonic() > deadline:
                return flying or {}
            await self.h.sleep(MARCH_POLL)
        return {}

    async def marches_after(self, name: str, flying: dict[int, int],
                            ref: dict[str, Any]) -> None:
        """After a fault of map *name*: wait until every march that was in flight when it
        struck has left the map (home: the ledger check then proves it credited once);
        fills ``marches_at_fault``, ``marches_home_s`` and a violation in *ref*."""
        if not self._map_bots(name):
            return
        ref["marches_at_fault"] = len(flying)
        if not flying:
            ref.setdefault("violations", []).append(
                f"no march was in flight on {name} within {MARCH_WAIT:g}s: the fault "
                "checked no march")
            return
        owners = [b for b in self._map_bots(name) if b.userid in set(flying.values())]
        deadline = ref["t_end"] + MARCH_HOME_LIMIT
        for _ in range(int(MARCH_HOME_LIMIT / MARCH_POLL)):
            if time.monotonic() > deadline:
                break
            now = await self._in_flight(name, owners)
            if now is not None and not set(now) & set(flying):
                ref["marches_home_s"] = round(time.monotonic() - ref["t_end"], 2)
                return
            await self.h.sleep(MARCH_POLL)
        ref.setdefault("violations", []).append(
            f"marches in flight on {name} at the fault not home within "
            f"{MARCH_HOME_LIMIT:g}s of its end")

    def _double_online(self) -> list[records.Overlap]:
        events = records.read_logs(self.h.run_dir / f"{n}.log"
                                   for n in self.h.kind_nodes("role"))
        spans = records.intervals(events, self.h.kills, time.monotonic())
        self.intervals = len(spans)
        new = []
        for o in records.overlaps(spans):
            key = (o.first.node, o.first.generation, o.second.node, o.second.generation,
                   o.first.userid)
            if key not in self._reported_overlaps:
                self._reported_overlaps.add(key)
                new.append(o)
        return new

    intervals = 0
    seen: dict[str, int] = {}

    async def _until(self, check: Callable[[], bool], bound: float, what: str) -> None:
        deadline = time.monotonic() + bound
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {bound:g}s: {what}")
            await self.h.sleep(0.1)

    def bots_on(self, node: str) -> list[ChaosBot]:
        return [b for b in self.bots if b.online and b.node == node]

    # -- output -------------------------------------------------------------------------

    def result(self, seconds: float) -> dict[str, Any]:
        violations = sum(len(r["violations"]) for r in self.rows)
        lost = sum(len(r["acked_lost"]) for r in self.rows)
        return {
            "violations": violations,
            "double_online": sum(len(r["double_online"]) for r in self.rows),
            "acked_ops_lost": lost,
            "faults": self.rows,
            "ledger": self.ledger.counts(),
            "served_intervals": self.intervals,
            "checked": self.seen,
            "probes": {"logins": len(self.probes),
                       "ok": sum(1 for _, r in self.probes if r == "OK")},
            "bots": self.n_bots,
            "seconds": round(seconds, 1),
            "not_covered": NOT_COVERED,
            "notes": self.notes,
            "bounds": {"players_back_s": ROLE_BOUND, "logins_resumed_s": REDIS_BOUND,
                       "recovery_limit_s": RECOVERY_LIMIT},
            "cluster": self.h.describe(),
        }

    @staticmethod
    def _row_line(row: dict[str, Any]) -> str:
        ops = row["ops"]
        acked = sum(v[OK] for v in ops.values())
        bound = ""
        if "players_back_s" in row:
            bound = f", players back {row['players_back_s']}s ({row['affected_players']} moved)"
        if "logins_resumed_s" in row:
            bound = f", logins resumed {row['logins_resumed_s']}s after Redis"
        if "marches_at_fault" in row:
            bound += (f", {row['marches_at_fault']} marches in flight home "
                      f"{row.get('marches_home_s', 'never')}s after")
        verdict = "OK" if not row["violations"] else f"VIOLATED: {row['violations'][:3]}"
        return (f"recovered in {row['recovery_s']}s{bound}; {acked} ops acknowledged, "
                f"{len(row['acked_lost'])} lost, double-online {len(row['double_online'])}: "
                f"{verdict}")


def coverage(observed: dict[int, Observed], guilds: dict[int, GuildSeen]) -> dict[str, int]:
    """What a check looked at (so a check that passes on empty state shows it)."""
    mails = [m for o in observed.values() for m in o.mails]
    return {
        "players": len(observed),
        "mails": len(mails),
        "mails_claimed": sum(1 for m in mails if m.claimed),
        "gift_mails": sum(1 for m in mails if m.title == GIFT_TITLE),
        "global_mails": sum(1 for m in mails if m.title.startswith("gmail-")),
        "guilds": len(guilds),
        "guild_members": sum(len(g.members) for g in guilds.values()),
        "friendships": sum(len(o.friends) for o in observed.values()) // 2,
        "friend_requests": sum(len(o.requests_out) for o in observed.values()),
        "troops_observed": sum(1 for o in observed.values() if o.troops is not None),
        "marches_in_flight": sum(len(o.marches) for o in observed.values()),
    }


def guild_cost() -> int:
    """What a GuildCreate costs in gold (the shipped ``etc/game/guilds.toml`` the nodes
    load; ``GUILD_COST`` if it cannot be read)."""
    import tomllib

    from rltwist.config import packaged_root

    root = packaged_root()
    try:
        assert root is not None
        table = tomllib.loads((root / "etc" / "game" / "guilds.toml").read_text())
        cost = table.get("cost", {})
        if set(cost) - {"gold"}:
            raise ValueError(f"the ledger accounts gold only, the cost is {cost}")
        return int(cost.get("gold", 0))
    except (AssertionError, OSError, tomllib.TOMLDecodeError):
        return GUILD_COST


def gm_outcome(status: int) -> str:
    """A GM call that did not answer 200: never sent (0), refused before running (400,
    404: nothing happened), or unknown (no answer, timeout, link lost, save failed)."""
    return FAILED if status in (0, 400, 401, 404) else UNKNOWN


def status_name(status: int, result: Any) -> str:
    if status == 200:
        return "refused"
    if isinstance(result, dict) and result.get("error"):
        return f"{status} {result.get('kind') or result['error']}"
    return {0: "GM down", -1: "no answer"}.get(status, str(status))


def format_table(result: dict[str, Any]) -> str:
    """The faults x (recovery, bot errors, acked/lost, rollbacks, double online) table."""
    head = (f"{'fault':<30} {'recov s':>7} {'bound s':>8} {'settle':>6} {'acked':>6} "
            f"{'unkn':>5} {'lost':>5} {'rollb':>5} {'dbl':>4}  {'bot errors by code'}")
    lines = [head, "-" * len(head)]
    for r in result["faults"]:
        ops = r["ops"]
        acked = sum(v[OK] for v in ops.values())
        unknown = sum(v[UNKNOWN] for v in ops.values())
        bound = r.get("players_back_s", r.get("logins_resumed_s", ""))
        errors = ", ".join(f"{k} {v}" for k, v in r["bot_errors"].items()) or "-"
        rec = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        settle = r.get("settle_s", "")
        lines.append(f"{r['fault']:<30} {rec:>7} {bound!s:>8} {settle!s:>6} {acked:>6} "
                     f"{unknown:>5} "
                     f"{len(r['acked_lost']):>5} {len(r['allowed_rollbacks']):>5} "
                     f"{len(r['double_online']):>4}  {errors}")
        for v in r["violations"]:
            lines.append(f"    VIOLATION: {v}")
    led = result["ledger"]
    lines.append("")
    lines.append("ledger: " + "; ".join(
        f"{k} {v[OK]} ok / {v[UNKNOWN]} unknown / {v[FAILED]} refused"
        for k, v in led.items()))
    lines.append("last check looked at: " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in result["checked"].items()))
    lines.append(f"served intervals checked: {result['served_intervals']}; probe logins "
                 f"{result['probes']['ok']}/{result['probes']['logins']} ok; "
                 f"{result['bots']} bots; {result['seconds']}s")
    lines.append(f"violations: {result['violations']} (double online "
                 f"{result['double_online']}, acknowledged ops lost "
                 f"{result['acked_ops_lost']})")
    lines.append("not covered: " +
                 "; ".join(result["not_covered"]))
    return "\n".join(lines)


def write_json(path: str, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")


__all__ = ["Run", "format_table", "full_schedule", "quick_schedule", "summarize"]
