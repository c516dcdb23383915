"""Double-online proof from records: the role nodes' served intervals (see
:mod:`rltwist.nodes.role.served`), assembled per player and checked for overlap.

A start without an end belongs to an instance that is still online, or to a node that was
killed: its interval ends at the node's first kill after the start (``rl-chaos`` killed it
and knows when), or is open (ends "now") if the node was not killed since.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

RECORD = re.compile(r"served_(start|end) userid=(\d+) generation=(\d+) node=(\S+) "
                    r"t=(\d+(?:\.\d+)?)")


@attrs.frozen
class Event:
    kind: str  # "start" | "end"
    userid: int
    generation: int
    node: str
    t: float


@attrs.frozen
class Interval:
    """Node *node* served *userid* (instance *generation*) from *start* to *end*;
    ``how`` says where the end comes from: ``logout`` (its record), ``killed`` (the node's
    kill time) or ``open`` (still online: *end* is the time of the check)."""

    userid: int
    node: str
    generation: int
    start: float
    end: float
    how: str


@attrs.frozen
class Overlap:
    first: Interval
    second: Interval

    @property
    def seconds(self) -> float:
        return min(self.first.end, self.second.end) - max(self.first.start,
                                                           self.second.start)

    def describe(self) -> str:
        a, b = self.first, self.second
        return (f"player {a.userid} online twice for {self.seconds:.3f}s: {a.node} gen "
                f"{a.generation} [{a.start:.3f}, {a.end:.3f}] ({a.how}) and {b.node} gen "
                f"{b.generation} [{b.start:.3f}, {b.end:.3f}] ({b.how})")


def parse(text: str) -> list[Event]:
    """Every served record in *text* (a node's log), in order."""
    return [Event(m[1], int(m[2]), int(m[3]), m[4], float(m[5]))
            for m in RECORD.finditer(text)]


def read_logs(paths: Iterable[Path]) -> list[Event]:
    events: list[Event] = []
    for path in paths:
        try:
            events.extend(parse(path.read_text(errors="replace")))
        except FileNotFoundError:
            continue
    return events


def intervals(events: Sequence[Event], kills: Mapping[str, Sequence[float]],
              now: float) -> list[Interval]:
    """Pair starts with ends (same node, player, generation); a start without an end ends
    at the node's first kill after it, else it is open until *now*."""
    ends: dict[tuple[str, int, int], list[float]] = {}
    for e in events:
        if e.kind == "end":
            ends.setdefault((e.node, e.userid, e.generation), []).append(e.t)
    out: list[Interval] = []
    for e in events:
        if e.kind != "start":
            continue
        found = ends.get((e.node, e.userid, e.generation))
        if found:
            # an end before the start: the node began refusing writes while this Auth
            # was finishing (it served nothing): an empty interval
            out.append(Interval(e.userid, e.node, e.generation, e.t, max(min(found), e.t),
                                "logout"))
            continue
        killed = [k for k in kills.get(e.node, ()) if k >= e.t]
        if killed:
            out.append(Interval(e.userid, e.node, e.generation, e.t, min(killed), "killed"))
        else:
            out.append(Interval(e.userid, e.node, e.generation, e.t, max(now, e.t), "open"))
    return out


def overlaps(spans: Iterable[Interval]) -> list[Overlap]:
    """Every pair of intervals of one player that overlap (touching ends do not)."""
    by_user: dict[int, list[Interval]] = {}
    for s in spans:
        by_user.setdefault(s.userid, []).append(s)
    found: list[Overlap] = []
    for items in by_user.values():
        items.sort(key=lambda s: (s.start, s.end))
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                if b.start >= a.end:
                    break
                found.append(Overlap(a, b))
    return found
