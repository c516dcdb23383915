"""Global activities (seed §5 logiccenter gactivitymgr): the rules, apart from the wiring
so ``POST /hotfix`` changes them.

An activity is one stored document (globaldb, collection ``activity``)::

    {"id": 3, "kind": "double_gather", "start_ms": ..., "end_ms": ...,
     "regions": [] (every region) or [sid, ...], "params": {"rate_percent": 200},
     "state": "scheduled" | "running" | "ended", "stopped": False, "created_ms": ...}

Its kind, duration bounds and parameters come from the game table ``activities``
(``etc/game/activities.toml``). The state moves only forward: scheduled -> running (its
start came) -> ended (its end came, or a GM stopped it); a scheduled activity whose end
already passed (logiccenter was down over its whole run) goes straight to ended, and that
end is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rltwist.cluster.routing import MAX_SID
from rltwist.ecs.system import System

__all__ = ["ActivitySystem", "BadActivity", "system"]

SCHEDULED, RUNNING, ENDED = "scheduled", "running", "ended"
STARTED_EVENT, ENDED_EVENT, EXTENDED_EVENT = "started", "ended", "extended"
#: how far ahead a GM may schedule a start
MAX_LEAD_MS = 366 * 86_400_000


class BadActivity(ValueError):
    """A GM's activity request is wrong; str() names the field."""


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadActivity(f"{key} must be a non-negative number")
    return float(value)


class ActivitySystem(System):
    name = "activity"

    def kind(self, tables: Mapping[str, Any], kind: Any) -> Mapping[str, Any]:
        """The game table entry of *kind*, or :class:`BadActivity`."""
        kinds = tables["activities"]
        if not isinstance(kind, str) or kind not in kinds:
            raise BadActivity(f"kind must be one of {sorted(kinds)}")
        spec: Mapping[str, Any] = kinds[kind]
        return spec

    def check(self, body: Mapping[str, Any], tables: Mapping[str, Any],
              known_regions: Iterable[int], now_ms: int) -> dict[str, Any]:
        """A GM's ``POST /activities`` body checked against the game table: ``{kind,
        start_ms, end_ms, regions, params}``. The start is ``start_ms`` or ``start_in``
        seconds from now (default now), the end ``end_ms`` or ``duration`` seconds after
        the start; raises :class:`BadActivity` naming the field."""
        allowed = {"kind", "start_ms", "end_ms", "start_in", "duration", "regions", "params"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise BadActivity(f"unknown field {unknown[0]!r} (known: {sorted(allowed)})")
        spec = self.kind(tables, body.get("kind"))
        start_ms, start_in = _number(body, "start_ms"), _number(body, "start_in")
        end_ms, duration = _number(body, "end_ms"), _number(body, "duration")
        if start_ms is not None and start_in is not None:
            raise BadActivity("give start_ms or start_in, not both")
        if (end_ms is None) == (duration is None):
            raise BadActivity("give end_ms or duration (seconds)")
        start = int(start_ms if start_ms is not None else now_ms + (start_in or 0) * 1000)
        if start > now_ms + MAX_LEAD_MS:
            raise BadActivity("start_ms is more than a year ahead")
        end = int(end_ms if end_ms is not None else start + (duration or 0) * 1000)
        self._check_span(spec, start, end, now_ms)
        return {"kind": body["kind"], "start_ms": start, "end_ms": end,
                "regions": self._regions(body.get("regions", []), known_regions),
                "params": self._params(spec, body.get("params") or {})}

    def _check_span(self, spec: Mapping[str, Any], start: int, end: int,
                    now_ms: int) -> None:
        if end <= now_ms:
            raise BadActivity("the end is not in the future")
        low, high = spec["min_seconds"] * 1000, spec["max_seconds"] * 1000
        if not low <= end - start <= high:
            raise BadActivity(f"the run (end - start) must last {spec['min_seconds']}-"
                              f"{spec['max_seconds']} seconds for this kind")

    @staticmethod
    def _regions(regions: Any, known_regions: Iterable[int]) -> list[int]:
        if not isinstance(regions, list):
            raise BadActivity("regions must be a list of region ids ([] for every region)")
        known = set(known_regions)
        for sid in regions:
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= MAX_SID:
                raise BadActivity(f"regions: {sid!r} is not a region id (1..{MAX_SID})")
            if sid not in known:
                raise BadActivity(f"regions: region {sid} does not exist")
        return sorted(set(regions))

    @staticmethod
    def _params(spec: Mapping[str, Any], given: Any) -> dict[str, int]:
        if not isinstance(given, Mapping):
            raise BadActivity("params must be an object of integer parameters")
        known = spec.get("params", {})
        for name in given:
            if name not in known:
                raise BadActivity(f"params: {name!r} is not a parameter of this kind "
                                  f"(known: {sorted(known)})")
        params = {}
        for name, p in known.items():
            value = given.get(name, p["default"])
            if type(value) is not int or not p["min"] <= value <= p["max"]:
                raise BadActivity(f"params: {name} must be an integer {p['min']}-{p['max']}")
            params[name] = value
        return params

    def make(self, activity_id: int, checked: Mapping[str, Any],
             now_ms: int) -> dict[str, Any]:
        """The stored document of a new activity."""
        return {"id": activity_id, **checked, "regions": list(checked["regions"]),
                "params": dict(checked["params"]), "state": SCHEDULED, "stopped": False,
                "created_ms": now_ms}

    def step(self, doc: dict[str, Any], now_ms: int) -> str | None:
        """Move *doc* on to its state at *now_ms*; the event to report (``"started"``,
        ``"ended"``) or None when nothing changed."""
        if doc["state"] == SCHEDULED and now_ms >= doc["end_ms"]:
            doc["state"] = ENDED  # it ran entirely while nobody watched: report the end
            return ENDED_EVENT
        if doc["state"] == SCHEDULED and now_ms >= doc["start_ms"]:
            doc["state"] = RUNNING
            return STARTED_EVENT
        if doc["state"] == RUNNING and now_ms >= doc["end_ms"]:
            doc["state"] = ENDED
            return ENDED_EVENT
        return None

    def due_ms(self, doc: Mapping[str, Any]) -> int | None:
        """When *doc* next changes state by itself (None once it ended)."""
        if doc["state"] == SCHEDULED:
            return int(min(doc["start_ms"], doc["end_ms"]))
        if doc["state"] == RUNNING:
            return int(doc["end_ms"])
        return None

    def stop(self, doc: dict[str, Any], now_ms: int) -> str | None:
        """A GM stops *doc*: a running one ends now (the end is reported), a scheduled
        one is cancelled (never started: nothing to report). Raises
        :class:`BadActivity` if it already ended."""
        if doc["state"] == ENDED:
            raise BadActivity(f"activity {doc['id']} already ended")
        was = doc["state"]
        doc["state"], doc["stopped"] = ENDED, True
        doc["end_ms"] = min(doc["end_ms"], now_ms)
        return ENDED_EVENT if was == RUNNING else None

    def extend(self, doc: dict[str, Any], body: Mapping[str, Any],
               tables: Mapping[str, Any], now_ms: int) -> str | None:
        """A GM moves the end of *doc* later (``end_ms``, or ``by`` seconds); the event
        to report (``"extended"`` for a running one)."""
        unknown = sorted(set(body) - {"end_ms", "by"})
        if unknown:
            raise BadActivity(f"unknown field {unknown[0]!r} (known: ['by', 'end_ms'])")
        if doc["state"] == ENDED:
            raise BadActivity(f"activity {doc['id']} already ended")
        end_ms, by = _number(body, "end_ms"), _number(body, "by")
        if (end_ms is None) == (by is None):
            raise BadActivity("give end_ms or by (seconds)")
        end = int(end_ms if end_ms is not None else doc["end_ms"] + (by or 0) * 1000)
        if end <= doc["end_ms"]:
            raise BadActivity("the new end must be later than the current end")
        self._check_span(self.kind(tables, doc["kind"]), doc["start_ms"], end, now_ms)
        doc["end_ms"] = end
        return EXTENDED_EVENT if doc["state"] == RUNNING else None

    def current(self, doc: Mapping[str, Any], regions: Iterable[int]) -> bool:
        """Whether *doc* is running for a player of *regions*."""
        if doc["state"] != RUNNING:
            return False
        return not doc["regions"] or any(r in doc["regions"] for r in regions)


system = ActivitySystem()
