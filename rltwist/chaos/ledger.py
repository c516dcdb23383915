"""The ledger of ``rl-chaos run``: every operation the server acknowledged, and what must
be true afterwards.

Operations covered are the ones that exist and are durable at their OK:

* ``rename`` (client request): the player's name is the last acknowledged rename, or one
  whose answer never came (timeout, connection lost, RETRY_LATER: outcome unknown);
* ``grant`` (GM ``rolerouter.grant`` through rolecity's transfer ledger): the player's
  gold, plus grants still waiting in rolecity's ledger, is the base gold plus every
  acknowledged grant (less the cost of every guild the player created) plus a subset of
  the unknown ones — less is a loss, more is a double;
* ``mail`` (GM ``POST /players/<userid>/mail``, a system mail with ``food`` attached):
  every acknowledged mail is in the mailbox exactly once; a mail of unknown outcome at most
  once; a refused one not at all;
* ``claim`` (client ``MailClaim`` of one such mail): an acknowledged claim shows the mail
  claimed, and the player's food is the base plus the attachments of exactly the mails the
  mailbox shows claimed (credited once: less is a loss, more a double) plus a subset of
  those of claims of unknown outcome not shown claimed yet (credited, not confirmed),
  none of them claimed without a claim the bot sent;
* ``gift`` (client ``GiftSend`` of ``oil``): the sender's oil is the base less every
  acknowledged gift less a subset of the unknown ones; the receiver's mailbox holds one
  "A gift" mail from the sender per acknowledged gift, at most one per unknown one;
* ``guild`` (client ``GuildCreate``/``GuildJoin``/``GuildLeave``): the player's guildid is
  what the last acknowledged change made it (or what a later unknown one would), and the
  player's guildid and the guild's member list agree (no player listed by two guilds);
* ``friend`` (client ``FriendRequest``/``FriendAccept``): an acknowledged request is on the
  requester's side (pending or friends), an acknowledged accept makes both sides friends,
  and both sides agree on every pair the bots touched (no one-sided friendship or
  request);
* ``gmail`` (GM ``POST /mail/global`` and ``POST /mail/region/<sid>``): every player it
  targets has it exactly once when it was acknowledged, at most once when unknown, not at
  all when refused;
* ``march`` (client ``MarchStart`` of a small gather march, later ``MarchRecall``): every
  troop is in the city or in a march in flight — per type, home + in flight is the initial
  army (less is a march not credited yet or lost, more is a march credited twice) — and
  the load of every march that came home is credited once: the final load a recall
  answered (OK or MARCH_ALREADY_RETURNING: the march is on its way home, its load fixed)
  is added to the expected gold/food/oil; a march home whose load was never answered (its
  start of unknown outcome, a recall that came too late) may add up to
  ``march_capacity`` of a resource (a range, not an exact sum).

Deliveries that happen after the OK (gifts whose mail node was down, global mail to
players, guild and friend outboxes) are checked once they had time to settle: the run
re-observes for a bounded time before it reports a loss (see ``rltwist.chaos.run``). A
double never heals, so it is reported at once.

An outcome is ``ok`` (acknowledged), ``failed`` (a definitive refusal: nothing happened) or
``unknown`` (no answer, or an answer that does not say whether it happened).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from rltwist.cluster.routing import birth_region

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
KINDS = ("rename", "grant", "mail", "claim", "gift", "guild", "friend", "gmail", "march")
# rltwist.nodes.role.agent.new_player_doc
BASE_GOLD = 1000
BASE_FOOD = 1000
BASE_OIL = 500
GUILD_COST = 500  # etc/game/guilds.toml [cost] gold (the run reads the table)
GIFT_TITLE = "A gift"  # rltwist.game.mailsystem.gift_mail
#: subset sums over more unknown grants than this are not enumerated (range check only)
MAX_SUBSET = 16
#: the guildid an unknown GuildCreate may have given: any guild the player leads
ANY_OWN_GUILD = -1
#: etc/game/troops.toml [initial] (the run reads the table): a new player's army
INITIAL_TROOPS = {"infantry": 1000, "cavalry": 500, "archer": 500}
#: what one chaos march carries at most (1 infantry x load 10, etc/game/troops.toml)
MARCH_CAPACITY = 10


@attrs.define
class Op:
    kind: str
    userid: int  # the acting player (0: a GM operation aimed at many players)
    value: Any  # new name | gold | mail title | claimed mail title | oil | guild/friend verb
    outcome: str
    fault: str
    detail: str = ""
    t: float = 0.0  # monotonic time of the answer (or of giving up on it)
    region: int = 0
    #: mail: {"food"}; claim: {"mail_id"}; gift: {"to"}; guild: {"guildid"};
    #: friend: {"peer"}; gmail: {"regions"} ([] = every region); march: {"march_id"} and,
    #: on an acknowledged recall, {"load"} (the final load, resource -> amount)
    extra: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class MailSeen:
    """One mail of a mailbox as the mail node lists it."""

    id: int
    title: str
    sender: int = 0
    claimed: bool = False


@attrs.frozen
class MarchSeen:
    """One of a player's marches in flight as its map node lists it."""

    id: int
    army: tuple[tuple[str, int], ...] = ()
    load: tuple[tuple[str, int], ...] = ()


@attrs.frozen
class Observed:
    """A player's state as the cluster reports it at a check."""

    userid: int
    name: str = ""
    gold: int = BASE_GOLD
    pending_gold: int = 0  # grants still in rolecity's ledger
    mails: tuple[MailSeen, ...] = ()
    food: int = BASE_FOOD
    oil: int = BASE_OIL
    guildid: int = 0
    friends: frozenset[int] = frozenset()
    requests_in: frozenset[int] = frozenset()
    requests_out: frozenset[int] = frozenset()
    #: troops in the city (None: not observed) and marches in flight (map node)
    troops: tuple[tuple[str, int], ...] | None = None
    marches: tuple[MarchSeen, ...] = ()

    @property
    def mail_titles(self) -> tuple[str, ...]:
        return tuple(m.title for m in self.mails)


@attrs.frozen
class GuildSeen:
    """A guild as its guild node reports it (``guildrouter`` ``info``)."""

    guildid: int
    owner: int
    members: frozenset[int]
    outbox: frozenset[int] = frozenset()  # members whose guildid change is not through yet
    disbanded: bool = False


@attrs.frozen
class Loss:
    kind: str
    userid: int
    what: str  # "lost" | "doubled" | "mismatch"
    detail: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Ledger:
    """Operations in the order they were issued (per player, that is the order they ran:
    a bot waits for each answer before its next operation)."""

    def __init__(self, guild_cost: int = GUILD_COST,
                 initial_troops: Mapping[str, int] | None = None,
                 march_capacity: int = MARCH_CAPACITY) -> None:
        self.ops: list[Op] = []
        self.guild_cost = guild_cost
        self.initial_troops = dict(INITIAL_TROOPS if initial_troops is None
                                   else initial_troops)
        self.march_capacity = march_capacity

    def record(self, kind: str, userid: int, value: Any, outcome: str, fault: str,
               detail: str = "", **extra: Any) -> Op:
        """Append one operation with its outcome (*extra*: what its check needs)."""
        op = Op(kind, userid, value, outcome, fault, detail, time.monotonic(),
                birth_region(userid) if userid else 0, dict(extra))
        self.ops.append(op)
        return op

    def of(self, userid: int, kind: str) -> list[Op]:
        return [op for op in self.ops if op.userid == userid and op.kind == kind]

    def users(self) -> set[int]:
        return {op.userid for op in self.ops if op.userid}

    def counts(self, fault: str | None = None) -> dict[str, dict[str, int]]:
        """{kind: {outcome: n}} over every op (or those issued during *fault*)."""
        out = {k: {OK: 0, FAILED: 0, UNKNOWN: 0} for k in KINDS}
        for op in self.ops:
            if fault is None or op.fault == fault:
                out[op.kind][op.outcome] += 1
        return out

    def guild_ids(self) -> set[int]:
        """Every guild an operation named (the guilds the checker reads)."""
        return {int(op.extra["guildid"]) for op in self.ops
                if op.kind == "guild" and op.extra.get("guildid")}

    # -- what must be true --------------------------------------------------------------

    def expected_names(self, userid: int) -> set[str] | None:
        """The names the player may have now (None: no rename was ever tried)."""
        ops = self.of(userid, "rename")
        if not ops:
            return None
        last_ok = max((i for i, op in enumerate(ops) if op.outcome == OK), default=-1)
        names = {ops[last_ok].value if last_ok >= 0 else ""}
        names |= {op.value for op in ops[last_ok + 1:] if op.outcome == UNKNOWN}
        return names

    def expected_guilds(self, userid: int) -> tuple[set[int], bool]:
        """The guildids the player may have now (``ANY_OWN_GUILD``: a guild it leads) and
        whether an acknowledged change decides it."""
        allowed, decided = {0}, False
        for op in self.of(userid, "guild"):
            target = 0 if op.value == "leave" else int(op.extra.get("guildid") or 0)
            if op.value == "create" and not target:
                target = ANY_OWN_GUILD
            if op.outcome == OK:
                allowed, decided = {target}, True
            elif op.outcome == UNKNOWN:
                allowed.add(target)
        return allowed, decided

    def check(self, observed: Mapping[int, Observed],
              guilds: Mapping[int, GuildSeen] | None = None) -> list[Loss]:
        """Every way *observed* (players; *guilds* by id) breaks a promise of the ledger."""
        guilds = guilds or {}
        losses: list[Loss] = []
        # every player observed too: one no operation touched must have kept its base
        # resources, no gift mail, no guild
        gifts_to = self._gifts_to()
        users = self.users() | set(observed) | set(gifts_to)
        for userid in sorted(users):
            seen = observed.get(userid)
            if seen is None:
                losses.append(Loss("any", userid, "mismatch", "player state not observed"))
                continue
            losses += self._check_name(userid, seen)
            losses += self._check_gold(userid, seen)
            losses += self._check_mail(userid, seen)
            losses += self._check_claims(userid, seen)
            losses += self._check_gift_debit(userid, seen)
            losses += self._check_gifts_received(userid, seen, gifts_to.get(userid, {}))
            losses += self._check_guild(userid, seen, guilds)
            losses += self._check_friends(userid, seen)
            losses += self._check_gmail(userid, seen)
            losses += self._check_troops(userid, seen)
        losses += self._check_guild_lists(observed, guilds)
        losses += self._check_friend_pairs(observed)
        return losses

    def _check_name(self, userid: int, seen: Observed) -> list[Loss]:
        names = self.expected_names(userid)
        if names is None or seen.name in names:
            return []
        acked = [op.value for op in self.of(userid, "rename") if op.outcome == OK]
        what = "lost" if acked else "mismatch"
        return [Loss("rename", userid, what, f"name is {seen.name!r}, expected one of "
                     f"{sorted(names)} (acknowledged renames: {acked[-3:]})")]

    def _check_gold(self, userid: int, seen: Observed) -> list[Loss]:
        ops = self.of(userid, "grant")
        creates = self.of(userid, "guild")
        acked = sum(op.value for op in ops if op.outcome == OK)
        unknown = [op.value for op in ops if op.outcome == UNKNOWN]
        costs = [op for op in creates if op.value == "create"]
        acked -= self.guild_cost * sum(1 for op in costs if op.outcome == OK)
        unknown += [-self.guild_cost for op in costs if op.outcome == UNKNOWN]
        gathered, slack = self.march_loads(userid, seen)
        have = seen.gold + seen.pending_gold - BASE_GOLD - gathered.get("gold", 0)
        what = (f"gold {seen.gold} + pending {seen.pending_gold} - base {BASE_GOLD} - "
                f"gathered {gathered.get('gold', 0)} = {have}; acknowledged grants less "
                f"guild costs {acked}, unknown {unknown}, unanswered march loads <= {slack}")
        return _balance("grant", userid, have, acked, unknown, what, slack)

    def _check_mail(self, userid: int, seen: Observed) -> list[Loss]:
        ops = self.of(userid, "mail")
        counts = _count(seen.mail_titles)
        losses = []
        for op in ops:
            n = counts.get(op.value, 0)
            if op.outcome == OK and n == 0:
                losses.append(Loss("mail", userid, "lost", f"acknowledged mail {op.value!r} "
                                   "is not in the mailbox"))
            if op.outcome == FAILED and n:
                losses.append(Loss("mail", userid, "mismatch", f"mail {op.value!r} was "
                                   f"refused ({op.detail}) but is in the mailbox"))
            if n > 1:
                losses.append(Loss("mail", userid, "doubled", f"mail {op.value!r} is in the "
                                   f"mailbox {n} times"))
        return losses

    def _check_claims(self, userid: int, seen: Observed) -> list[Loss]:
        food = {op.value: int(op.extra.get("food", 0)) for op in self.of(userid, "mail")}
        claims = self.of(userid, "claim")
        must = {op.value for op in claims if op.outcome == OK}
        may = {op.value for op in claims if op.outcome == UNKNOWN} - must
        shown = {m.title for m in seen.mails if m.claimed and m.title in food}
        losses = [Loss("claim", userid, "lost", f"acknowledged claim of {t!r}: the mail is "
                       "not shown claimed") for t in sorted(must - shown)]
        losses += [Loss("claim", userid, "mismatch", f"{t!r} is shown claimed but no claim "
                        "of it was sent") for t in sorted(shown - must - may)]
        credited = sum(food[t] for t in shown)
        # a claim of unknown outcome may be credited and saved while its confirmation did
        # not reach the mail node (it died, or did not answer): the mail is shown claimed
        # only once the next MailClaim or Auth confirms it
        unconfirmed = [food[t] for t in sorted(may - shown) if t in food]
        gathered, slack = self.march_loads(userid, seen)
        have = seen.food - BASE_FOOD - gathered.get("food", 0)
        losses += _balance("claim", userid, have, credited, unconfirmed,
                           f"food {seen.food} - base {BASE_FOOD} - gathered "
                           f"{gathered.get('food', 0)} = {have}; "
                           f"attachments of the mails shown claimed {credited}, of those "
                           f"claimed with an unknown outcome and not shown claimed "
                           f"{unconfirmed}, unanswered march loads <= {slack}", slack)
        return losses

    def _check_gift_debit(self, userid: int, seen: Observed) -> list[Loss]:
        ops = self.of(userid, "gift")
        gathered, slack = self.march_loads(userid, seen)
        oil = seen.oil - gathered.get("oil", 0)  # what gifts left of it
        if not ops:
            return [] if BASE_OIL <= oil <= BASE_OIL + slack else [Loss(
                "gift", userid, "mismatch", f"oil {seen.oil} (gathered "
                f"{gathered.get('oil', 0)}, unanswered march loads <= {slack}) but no gift "
                f"was sent (base {BASE_OIL})")]
        acked = sum(op.value for op in ops if op.outcome == OK)
        unknown = [op.value for op in ops if op.outcome == UNKNOWN]
        given = BASE_OIL - oil
        # a gift debit that is lost is "given less": reported as the sender's loss of the
        # debit (the recipient's side is checked on the mailbox); an unanswered march load
        # of oil makes the oil given look smaller
        return _balance("gift", userid, given, acked, unknown,
                        f"oil given (base {BASE_OIL} - (oil {seen.oil} - gathered "
                        f"{gathered.get('oil', 0)})) = {given}; acknowledged gifts {acked}, "
                        f"unknown {unknown}, unanswered march loads <= {slack}", -slack)

    def _gifts_to(self) -> dict[int, dict[int, tuple[int, int]]]:
        """receiver -> sender -> (acknowledged, unknown) gifts."""
        out: dict[int, dict[int, tuple[int, int]]] = {}
        for op in self.ops:
            if op.kind != "gift" or op.outcome == FAILED:
                continue
            per = out.setdefault(int(op.extra["to"]), {})
            ok, unk = per.get(op.userid, (0, 0))
            per[op.userid] = (ok + (op.outcome == OK), unk + (op.outcome == UNKNOWN))
        return out

    def _check_gifts_received(self, userid: int, seen: Observed,
                              senders: Mapping[int, tuple[int, int]]) -> list[Loss]:
        got = _count(m.sender for m in seen.mails if m.title == GIFT_TITLE)
        losses = []
        for sender in sorted(set(senders) | set(got)):
            ok, unk = senders.get(sender, (0, 0))
            n = got.get(sender, 0)
            if n < ok:
                losses.append(Loss("gift", userid, "lost", f"{n} gift mails from {sender}, "
                                   f"{ok} acknowledged"))
            elif n > ok + unk:
                losses.append(Loss("gift", userid, "doubled", f"{n} gift mails from {sender}, "
                                   f"{ok} acknowledged + {unk} unknown"))
        return losses

    def _check_guild(self, userid: int, seen: Observed,
                     guilds: Mapping[int, GuildSeen]) -> list[Loss]:
        losses = []
        if self.of(userid, "guild"):
            allowed, decided = self.expected_guilds(userid)
            g = guilds.get(seen.guildid)
            led = g is not None and g.owner == userid
            if seen.guildid not in allowed and not (ANY_OWN_GUILD in allowed and led):
                losses.append(Loss("guild", userid, "lost" if decided else "mismatch",
                                   f"guildid is {seen.guildid}, expected one of "
                                   f"{sorted(allowed)} (-1: a guild the player leads)"))
        if seen.guildid:
            g = guilds.get(seen.guildid)
            if g is None:
                losses.append(Loss("guild", userid, "mismatch", f"guildid {seen.guildid}: "
                                   "the guild was not observed"))
            elif userid not in g.members:
                losses.append(Loss("guild", userid, "mismatch", f"guildid {seen.guildid} but "
                                   "the guild does not list the player"))
        return losses

    def _check_guild_lists(self, observed: Mapping[int, Observed],
                           guilds: Mapping[int, GuildSeen]) -> list[Loss]:
        losses = []
        listed: dict[int, list[int]] = {}
        for gid, g in sorted(guilds.items()):
            for member in sorted(g.members):
                listed.setdefault(member, []).append(gid)
                seen = observed.get(member)
                if seen is not None and seen.guildid != gid:
                    losses.append(Loss("guild", member, "mismatch", f"guild {gid} lists the "
                                       f"player, whose guildid is {seen.guildid}"))
        for member, gids in sorted(listed.items()):
            if len(gids) > 1:
                losses.append(Loss("guild", member, "doubled", f"listed by guilds {gids}"))
        return losses

    def _check_friends(self, userid: int, seen: Observed) -> list[Loss]:
        losses = []
        for op in self.of(userid, "friend"):
            peer = int(op.extra["peer"])
            if op.outcome != OK:
                continue
            if op.value == "request" and peer not in seen.friends | seen.requests_out:
                losses.append(Loss("friend", userid, "lost", f"acknowledged request to "
                                   f"{peer}: neither friends nor a request sent"))
            if op.value == "accept" and peer not in seen.friends:
                losses.append(Loss("friend", userid, "lost", f"acknowledged accept of {peer}:"
                                   " not friends"))
        return losses

    def _check_friend_pairs(self, observed: Mapping[int, Observed]) -> list[Loss]:
        """Both sides agree on every pair of observed players one of them names."""
        pairs = {(min(a, int(op.extra["peer"])), max(a, int(op.extra["peer"])))
                 for op in self.ops if op.kind == "friend" for a in (op.userid,)}
        for userid, seen in observed.items():
            for peer in seen.friends | seen.requests_in | seen.requests_out:
                pairs.add((min(userid, peer), max(userid, peer)))
        losses = []
        for a, b in sorted(pairs):
            sa, sb = observed.get(a), observed.get(b)
            if sa is None or sb is None:
                continue  # not a bot of this run (or not observed: reported already)
            sides = [(b in sa.friends, a in sb.friends, "friendship"),
                     (b in sa.requests_out, a in sb.requests_in, f"request {a}->{b}"),
                     (b in sa.requests_in, a in sb.requests_out, f"request {b}->{a}")]
            for mine, theirs, what in sides:
                if mine != theirs:
                    losses.append(Loss("friend", a, "mismatch", f"one-sided {what}: {a} says "
                                       f"{mine}, {b} says {theirs}"))
        return losses

    def march_loads(self, userid: int, seen: Observed) -> tuple[dict[str, int], int]:
        """What the player's marches that came home must have credited: the final loads
        a recall answered (resource -> amount), and how much more (of any one resource)
        the marches home whose load was never answered may have brought."""
        ops = self.of(userid, "march")
        if not ops:
            return {}, 0
        flying = {m.id for m in seen.marches}
        final: dict[int, dict[str, int]] = {}
        for op in ops:
            if op.value == "recall" and op.outcome == OK:
                final[int(op.extra["march_id"])] = dict(op.extra.get("load") or {})
        started = {int(op.extra.get("march_id") or 0) for op in ops
                   if op.value == "start" and op.outcome == OK}
        unknown_starts = sum(1 for op in ops if op.value == "start" and op.outcome == UNKNOWN)
        known: dict[str, int] = {}
        for mid, load in final.items():
            if mid not in flying:
                for res, n in load.items():
                    known[res] = known.get(res, 0) + int(n)
        # marches the bot learned of only from MarchList: starts of unknown outcome
        found = len(set(final) - started)
        unanswered = len({m for m in started - set(final) if m not in flying})
        unanswered += max(0, unknown_starts - found)
        return known, unanswered * self.march_capacity

    def _check_troops(self, userid: int, seen: Observed) -> list[Loss]:
        """Per troop type: in the city + in marches in flight = the initial army (gather
        marches lose no troops)."""
        if seen.troops is None:
            if self.of(userid, "march"):
                return [Loss("march", userid, "mismatch", "troops not observed")]
            return []
        total = dict(seen.troops)
        for m in seen.marches:
            for t, n in m.army:
                total[t] = total.get(t, 0) + n
        acked = sum(1 for op in self.of(userid, "march")
                    if op.value == "start" and op.outcome == OK)
        losses = []
        for t in sorted(set(total) | set(self.initial_troops)):
            have, want = total.get(t, 0), self.initial_troops.get(t, 0)
            what = (f"{t}: {dict(seen.troops).get(t, 0)} home + "
                    f"{have - dict(seen.troops).get(t, 0)} in {len(seen.marches)} marches "
                    f"in flight = {have}, initial {want} ({acked} starts acknowledged)")
            if have < want:
                losses.append(Loss("march", userid, "lost", f"{what}: {want - have} short"))
            elif have > want:
                losses.append(Loss("march", userid, "doubled",
                                   f"{what}: {have - want} too many"))
        return losses

    def _check_gmail(self, userid: int, seen: Observed) -> list[Loss]:
        region = birth_region(userid)
        counts = _count(seen.mail_titles)
        losses = []
        for op in self.ops:
            if op.kind != "gmail":
                continue
            regions = op.extra.get("regions") or []
            if regions and region not in regions:
                continue
            n = counts.get(op.value, 0)
            if op.outcome == FAILED:
                if n:
                    losses.append(Loss("gmail", userid, "mismatch", f"global mail "
                                       f"{op.value!r} was refused ({op.detail}) but is in "
                                       "the mailbox"))
                continue
            if op.outcome == OK and n == 0:
                losses.append(Loss("gmail", userid, "lost", f"acknowledged global mail "
                                   f"{op.value!r} (regions {regions or 'all'}) is not in the "
                                   "mailbox"))
            if n > 1:
                losses.append(Loss("gmail", userid, "doubled", f"global mail {op.value!r} "
                                   f"is in the mailbox {n} times"))
        return losses


def _balance(kind: str, userid: int, have: int, acked: int, unknown: Sequence[int],
             what: str, slack: int = 0) -> list[Loss]:
    """*have* must be *acked* plus a subset of *unknown* (values of either sign), give or
    take anything between 0 and *slack* (of its sign: march loads never answered)."""
    lo = acked + sum(v for v in unknown if v < 0) + min(0, slack)
    hi = acked + sum(v for v in unknown if v > 0) + max(0, slack)
    if have < lo:
        return [Loss(kind, userid, "lost", f"{what}: {lo - have} short")]
    if have > hi:
        return [Loss(kind, userid, "doubled", f"{what}: {have - hi} too much")]
    if len(unknown) <= MAX_SUBSET:
        sums = subset_sums(unknown)
        if not any(have - acked - k in sums
                   for k in range(min(0, slack), max(0, slack) + 1)):
            return [Loss(kind, userid, "mismatch", f"{what}: {have - acked} is no sum of "
                         "the unknown ones")]
    return []


def _count(values: Iterable[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def subset_sums(values: Sequence[int]) -> set[int]:
    sums = {0}
    for v in values:
        sums |= {s + v for s in sums}
    return sums


def summarize(losses: Iterable[Loss]) -> dict[str, int]:
    out: dict[str, int] = {}
    for loss in losses:
        key = f"{loss.kind} {loss.what}"
        out[key] = out.get(key, 0) + 1
    return out


def healing(losses: Iterable[Loss]) -> bool:
    """Whether waiting may clear every one of *losses* (no double: a double never heals;
    a delivery after the OK — gift, global mail, guild or friend outbox — may still come;
    a guild listing a player twice heals too: the second of two racing joins is undone)."""
    return all(loss.what != "doubled" or loss.kind == "guild" for loss in losses)
