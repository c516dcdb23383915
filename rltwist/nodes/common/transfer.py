"""Transfers between owners: the one way to move things from one owner's entity to another's
(GM grants today; gifts, mail attachments, march loot, troops and move-city costs later)
so that a timeout or a crash at any step neither loses nor doubles them.

Two owners never share a write: the *source* keeps a **ledger** (component ``ledger`` of
its entity) and the *destination* an **inbox** (component ``inbox`` of its entity: the ids
it has applied). A transfer is an entry of the ledger with an id unique for all time::

    ledger = {transfer_id: {"kind": "grant", "items": {"gold": 100},
                            "taken_by": None | [taker, generation], "created_ms": ms}}

and it moves in two steps, each one saved by its owner before the next starts:

1. **take** (source): every entry not taken, or taken by an *older* generation of the same
   taker, is marked ``taken_by = [taker, generation]``; the source saves, then hands them
   (entries already taken by this very generation are handed again: a retry).
2. **apply** (destination): for each entry, :func:`accept` records its id in the inbox and
   answers True only the first time; only then are the items applied. The destination
   saves the items and the inbox together (one entity, one write).
3. **confirm** (source): the source deletes the confirmed entries and saves; the
   destination then :func:`forget` s the ids.

A crash anywhere is resumed by the next pull: entries taken but not applied are handed
again to the next (newer) generation; entries applied and saved but not confirmed are
handed again, skipped by the inbox (already applied) and confirmed. A stale taker (an old
instance) cannot apply for good: its saves are fenced by storage, and the source fences
its take and confirm (see :mod:`rltwist.nodes.common.playerfence`).

Transfer ids are ``<ledger>-<hex>``: the destination knows from the prefix which ledger an
applied id came from, so after a take it forgets the ids of that ledger the source no
longer holds (a crash between confirm and the destination's next save leaks none).

The destination side of a pull is :class:`Receiver` (it also holds the crash points
``after_<step>_take`` and ``after_<step>_apply``); the source side is :func:`add`,
:func:`take` and :func:`confirm`, called inside the source's own serialized, saved actions
(rolecity: ``take_transfers`` / ``confirm_transfers``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger

from rltwist.crashpoint import crashpoint
from rltwist.ecs.entity import Entity, plain_copy
from rltwist.nodes.common.keylock import KeyedLock

log = Logger()

LEDGER = "ledger"
INBOX = "inbox"
MAX_ENTRIES = 1000
"""Entries one ledger holds at most: a source that would exceed it gets LedgerFull."""

_pull_locks = KeyedLock()
"""(ledger, destination id) -> lock: pulls of one destination from one ledger never overlap,
however many Receiver objects the caller made (a lock is dropped once nobody holds it)."""


class LedgerFull(Exception):
    """The source's ledger holds MAX_ENTRIES transfers that the destination has not
    taken yet; nothing was added (the caller retries later or gives up)."""


class BadTransfer(ValueError):
    """A transfer entry or an id list is malformed."""


def new_transfer_id(ledger: str) -> str:
    """A fresh transfer id of ledger *ledger*: ``<ledger>-<32 hex digits>``."""
    _check_ledger_name(ledger)
    return f"{ledger}-{uuid.uuid4().hex}"


def ledger_of(transfer_id: str) -> str:
    """The ledger name a transfer id was made by (the part before the first ``-``)."""
    return transfer_id.partition("-")[0]


def _check_ledger_name(ledger: str) -> None:
    if not isinstance(ledger, str) or not ledger or not ledger.isalnum():
        raise BadTransfer(f"a ledger name is a non-empty alphanumeric string: {ledger!r}")


def _check_id(transfer_id: Any) -> str:
    # stored as a component key: a str without "." or "$" (MongoDB), bounded
    if (not isinstance(transfer_id, str) or not 0 < len(transfer_id) <= 128
            or "." in transfer_id or transfer_id.startswith("$")):
        raise BadTransfer(f"bad transfer id {transfer_id!r}")
    return transfer_id


def check_ids(ids: Any) -> list[str]:
    """Validate a list of transfer ids from the wire (bounded: MAX_ENTRIES)."""
    if not isinstance(ids, list | tuple) or len(ids) > MAX_ENTRIES:
        raise BadTransfer(f"transfer ids must be a list of at most {MAX_ENTRIES} ids")
    return [_check_id(i) for i in ids]


def _check_generation(generation: Any) -> int:
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise BadTransfer(f"a generation is a non-negative int, got {generation!r}")
    return generation


# -- the source side: the ledger --------------------------------------------------------


def entries(entity: Entity) -> dict[str, dict[str, Any]]:
    """The ledger of *entity* (live dict; empty if it has none, without creating it)."""
    return entity.components.get(LEDGER, {})


def add(entity: Entity, ledger: str, kind: str, items: Mapping[str, Any], *,
        transfer_id: str | None = None, now_ms: int | None = None) -> str:
    """Record a new transfer of *items* (plain data) in *entity*'s ledger; return its id.

    The caller saves *entity* before it tells anyone the transfer exists. A given
    *transfer_id* that is already in the ledger is not added twice (idempotent retry)."""
    if not isinstance(kind, str) or not kind:
        raise BadTransfer(f"a transfer kind is a non-empty string, got {kind!r}")
    if not isinstance(items, Mapping):
        raise BadTransfer("transfer items are a dict")
    tid = _check_id(transfer_id) if transfer_id is not None else new_transfer_id(ledger)
    book = entity.component(LEDGER)
    if tid in book:
        return tid
    if len(book) >= MAX_ENTRIES:
        raise LedgerFull(f"ledger of {entity.id!r} holds {len(book)} transfers")
    book[tid] = {"kind": kind, "items": plain_copy(dict(items)), "taken_by": None,
                 "created_ms": int(time.time() * 1000) if now_ms is None else now_ms}
    entity.mark_dirty()
    return tid


def take(entity: Entity, taker: Any, generation: int) -> list[dict[str, Any]]:
    """Step 1 at the source: mark for ``(taker, generation)`` and return the entries it may
    apply, as ``[{"id", "kind", "items"}]`` oldest first.

    Handed: entries not taken, taken by an older generation of *taker* (its instance
    died or was fenced off) or by this very generation (a retry). Not handed: entries
    taken by another taker, or by a newer generation of *taker* (then the caller is stale;
    the source's fence normally refuses it before this). Marks the entity dirty when it
    changed a mark; the caller saves before answering."""
    _check_generation(generation)
    book = entries(entity)
    handed: list[dict[str, Any]] = []
    changed = False
    for tid, entry in sorted(book.items(), key=lambda kv: (kv[1].get("created_ms", 0), kv[0])):
        by = entry.get("taken_by")
        if by is not None:
            who, gen = by
            if who != taker:
                continue
            if gen > generation:
                log.warn("transfer {tid} of {id} is taken by generation {gen} of {taker}, "
                         "newer than the taker's {generation}: not handed", tid=tid,
                         id=entity.id, gen=gen, taker=taker, generation=generation)
                continue
        if by is None or by[1] != generation:
            entry["taken_by"] = [taker, generation]
            changed = True
        handed.append({"id": tid, "kind": entry["kind"], "items": plain_copy(entry["items"])})
    if changed:
        entity.mark_dirty()
    return handed


def confirmable(entity: Entity, taker: Any, generation: int, ids: Iterable[str]) -> list[str]:
    """The ids among *ids* that :func:`confirm` would delete."""
    book = entries(entity)
    found = []
    for tid in ids:
        by = book.get(tid, {}).get("taken_by")
        if by is not None and by[0] == taker and by[1] <= generation:
            found.append(tid)
    return found


def confirm(entity: Entity, taker: Any, generation: int, ids: Iterable[str]) -> int:
    """Step 3 at the source: delete the entries of *ids* that ``(taker, generation or
    older)`` took; return how many. Unknown ids (already confirmed) are fine; an entry
    never taken, or taken by someone else or a newer generation, is kept (it cannot have
    been applied by this caller). The caller saves before answering."""
    _check_generation(generation)
    gone = confirmable(entity, taker, generation, ids)
    book = entries(entity)
    for tid in gone:
        del book[tid]
    if gone:
        entity.mark_dirty()
    return len(gone)


# -- the destination side: the inbox ----------------------------------------------------


def accept(entity: Entity, transfer_id: str) -> bool:
    """Record *transfer_id* as applied to *entity*; True only the first time.

    Apply the transfer's items only when this answers True, in the same synchronous step
    (no await in between), so the inbox and the items are saved together."""
    _check_id(transfer_id)
    inbox = entity.component(INBOX)
    if transfer_id in inbox:
        return False
    inbox[transfer_id] = int(time.time() * 1000)
    entity.mark_dirty()
    return True


def unaccept(entity: Entity, transfer_id: str) -> None:
    """Undo :func:`accept` when applying the items failed (nothing was applied)."""
    inbox = entity.components.get(INBOX)
    if inbox is not None and inbox.pop(transfer_id, None) is not None:
        entity.mark_dirty()


def applied(entity: Entity, ledger: str | None = None) -> list[str]:
    """The transfer ids in *entity*'s inbox (only those of *ledger* if given)."""
    inbox = entity.components.get(INBOX, {})
    if ledger is None:
        return list(inbox)
    return [tid for tid in inbox if ledger_of(tid) == ledger]


def forget(entity: Entity, ids: Iterable[str]) -> int:
    """Drop *ids* from the inbox once their source confirmed them (saved with the next save
    of the entity; until then a re-handed id is still recognised); return how many."""
    inbox = entity.components.get(INBOX)
    if not inbox:
        return 0
    n = 0
    for tid in ids:
        if inbox.pop(tid, None) is not None:
            n += 1
    if n:
        entity.mark_dirty()
    return n


# -- a whole pull, destination side ----------------------------------------------------


@attrs.define
class Pulled:
    """What one :meth:`Receiver.pull` did."""

    applied: list[dict[str, Any]] = attrs.Factory(list)
    """Entries applied now (first time)."""
    skipped: list[str] = attrs.Factory(list)
    """Ids handed again that the inbox had applied already (resumed after a crash)."""
    failed: list[str] = attrs.Factory(list)
    """Ids whose apply raised: left at the source, handed again at the next pull."""
    confirmed: int = 0
    """Entries the source deleted."""
    saved: bool = True
    """False: the destination's save was not acknowledged, nothing was confirmed."""


class Receiver:
    """The destination side of the transfers of one ledger, for many destination entities.

    ``pull(entity, take=..., save=..., confirm=...)`` runs the steps above; *apply* is
    ``apply(entity, entry)``: change the entity for the entry, all or nothing, synchronously
    (raise before changing anything to refuse it, e.g. a kind this code does not know yet:
    it then stays at the source and is handed again). Pulls of one entity from one ledger
    never overlap (a lock per ledger and entity id, shared by every Receiver of the
    process): two overlapping pulls could otherwise accept an entry again after the other
    one forgot it.

    Crash points (test-only, see :mod:`rltwist.crashpoint`), reached only when the take
    handed something: ``after_<step>_take`` right after the take answered,
    ``after_<step>_apply`` after the destination's save and before the confirm.
    """

    def __init__(self, ledger: str, apply: Callable[[Entity, dict[str, Any]], Any], *,
                 step: str | None = None) -> None:
        _check_ledger_name(ledger)
        self.ledger = ledger
        self.apply = apply
        self.step = step or ledger

    async def pull(self, entity: Entity, *,
                   take: Callable[[], Awaitable[list[dict[str, Any]]]],
                   save: Callable[[], Awaitable[bool]],
                   confirm: Callable[[list[str]], Awaitable[int]]) -> Pulled:
        """Take what the source holds for *entity*, apply the new entries, save, confirm.

        *take* and *confirm* are the source's two calls (errors propagate: nothing is lost,
        the next pull resumes); *save* saves *entity* and answers whether storage
        acknowledged it (a clean entity counts as saved)."""
        async with _pull_locks((self.ledger, entity.id)):
            handed = await take()
            if not isinstance(handed, list):
                raise BadTransfer(f"take answered {type(handed).__name__}, not a list")
            result = Pulled()
            held = {e["id"] for e in handed}
            # applied ids of this ledger the source no longer holds: confirmed before a crash
            # lost our forget, or just now by an earlier pull
            forget(entity, [t for t in applied(entity, self.ledger) if t not in held])
            if not handed:
                return result
            crashpoint(f"after_{self.step}_take")
            for entry in handed:
                tid = _check_id(entry["id"])
                if not accept(entity, tid):
                    result.skipped.append(tid)
                    continue
                try:
                    self.apply(entity, entry)
                except Exception:
                    unaccept(entity, tid)
                    result.failed.append(tid)
                    log.failure("transfer {tid} ({kind}) to {id} could not be applied; it "
                                "stays at the source", tid=tid, kind=entry.get("kind"),
                                id=entity.id)
                    continue
                result.applied.append(entry)
            done = [e["id"] for e in handed if e["id"] not in result.failed]
            if not done:
                return result
            if not await save():
                result.saved = False
                log.warn("transfers to {id}: save not acknowledged; {n} entries stay taken "
                         "at the source and are handed again", id=entity.id, n=len(done))
                return result
            crashpoint(f"after_{self.step}_apply")
            result.confirmed = await confirm(done)
            forget(entity, done)
            return result
