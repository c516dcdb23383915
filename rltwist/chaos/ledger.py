"""The ledger of ``rl-chaos run``: every operation the server acknowledged, and what must
be true afterwards.

Operations covered are the ones that exist and are durable at their OK:

* ``rename`` (client request): the player's name is the last acknowledged rename, or one
  whose answer never came (timeout, connection lost, RETRY_LATER: outcome unknown);
* ``grant`` (GM ``rolerouter.grant`` through rolecity's transfer ledger): the player's
  gold, plus grants still waiting in rolecity's ledger, is the base gold plus every
  acknowledged grant plus a subset of the unknown ones — less is a loss, more is a double;
* ``mail`` (GM ``mailrouter.deliver``): every acknowledged mail is in the mailbox exactly
  once; a mail of unknown outcome at most once.

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
KINDS = ("rename", "grant", "mail")
BASE_GOLD = 1000  # rltwist.nodes.role.agent.new_player_doc
#: subset sums over more unknown grants than this are not enumerated (range check only)
MAX_SUBSET = 16


@attrs.define
class Op:
    kind: str
    userid: int
    value: Any  # new name | gold amount | mail title
    outcome: str
    fault: str
    detail: str = ""
    t: float = 0.0  # monotonic time of the answer (or of giving up on it)
    region: int = 0


@attrs.frozen
class Observed:
    """A player's state as the cluster reports it at a check."""

    userid: int
    name: str
    gold: int
    pending_gold: int  # grants still in rolecity's ledger
    mail_titles: tuple[str, ...]


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
    a bot waits for each answer before its next rename)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def record(self, kind: str, userid: int, value: Any, outcome: str, fault: str,
               detail: str = "") -> Op:
        op = Op(kind, userid, value, outcome, fault, detail, time.monotonic(),
                birth_region(userid))
        self.ops.append(op)
        return op

    def of(self, userid: int, kind: str) -> list[Op]:
        return [op for op in self.ops if op.userid == userid and op.kind == kind]

    def users(self) -> set[int]:
        return {op.userid for op in self.ops}

    def counts(self, fault: str | None = None) -> dict[str, dict[str, int]]:
        """{kind: {outcome: n}} over every op (or those issued during *fault*)."""
        out = {k: {OK: 0, FAILED: 0, UNKNOWN: 0} for k in KINDS}
        for op in self.ops:
            if fault is None or op.fault == fault:
                out[op.kind][op.outcome] += 1
        return out

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

    def check(self, observed: Mapping[int, Observed]) -> list[Loss]:
        """Every way *observed* breaks a promise of the ledger."""
        losses: list[Loss] = []
        for userid in sorted(self.users()):
            seen = observed.get(userid)
            if seen is None:
                losses.append(Loss("any", userid, "mismatch", "player state not observed"))
                continue
            losses += self._check_name(userid, seen)
            losses += self._check_gold(userid, seen)
            losses += self._check_mail(userid, seen)
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
        acked = sum(op.value for op in ops if op.outcome == OK)
        unknown = [op.value for op in ops if op.outcome == UNKNOWN]
        have = seen.gold + seen.pending_gold - BASE_GOLD
        if have < acked:
            return [Loss("grant", userid, "lost", f"gold {seen.gold} + pending "
                         f"{seen.pending_gold} is {acked - have} short of base {BASE_GOLD} "
                         f"+ acknowledged {acked}")]
        if have > acked + sum(unknown):
            return [Loss("grant", userid, "doubled", f"gold {seen.gold} + pending "
                         f"{seen.pending_gold} exceeds base {BASE_GOLD} + acknowledged "
                         f"{acked} + unknown {sum(unknown)} by "
                         f"{have - acked - sum(unknown)}")]
        if len(unknown) <= MAX_SUBSET and (have - acked) not in subset_sums(unknown):
            return [Loss("grant", userid, "mismatch", f"gold {seen.gold} + pending "
                         f"{seen.pending_gold} - base {BASE_GOLD} - acknowledged {acked} = "
                         f"{have - acked} is no sum of unknown grants {unknown}")]
        return []

    def _check_mail(self, userid: int, seen: Observed) -> list[Loss]:
        ops = self.of(userid, "mail")
        counts: dict[str, int] = {}
        for title in seen.mail_titles:
            counts[title] = counts.get(title, 0) + 1
        losses = []
        for op in ops:
            n = counts.get(op.value, 0)
            if op.outcome == OK and n == 0:
                losses.append(Loss("mail", userid, "lost", f"acknowledged mail {op.value!r} "
                                   "is not in the mailbox"))
            if n > 1:
                losses.append(Loss("mail", userid, "doubled", f"mail {op.value!r} is in the "
                                   f"mailbox {n} times"))
        return losses


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
