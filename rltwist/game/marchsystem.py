"""March rules (issue 13 "Marches and battle"): the player's troops, what a march may
start for, how fast it moves, how much it gathers, and what comes home.

Reached through ``import_system("rltwist.game.marchsystem", service=...)`` by the role
node's march requests (rltwist/features/marches.py) and the map node's ``march`` service
(rltwist/nodes/map/marches.py), so ``POST /hotfix`` changes them in running nodes.

The player's troops live in component ``troops`` of the player entity (role database)::

    {"home":    {"infantry": n, ...},              # in the city
     "given":   True,                              # the initial troops were given
     "sending": {transfer_id: {"type", "x", "y", "troops"}}}   # left, not confirmed

A MarchStart takes the troops off ``home`` and records the request under ``sending``
(saved before the map is asked); the map's answer confirms (the entry is dropped) or
refuses (the troops come back). An entry still there after a crash is sent again at the
next login; the map answers a repeated transfer id without starting a second march.

Marches are world entities on the map (attributes in rltwist/nodes/map/state.py) plus
``army`` (type -> count), ``target`` (entity id, 0 once homeward), ``home_x``/``home_y``
(the city), ``load`` (resource -> amount), ``tid`` (the start's transfer id), ``event`` and
``due_ms`` (its next timed event: ``arrive``, ``gathered`` or ``home``), and
``gather_ms`` (when gathering started). Every method here is synchronous.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.ecs.system import System
from rltwist.protocols import pb

__all__ = ["DEFAULT_TROOPS", "MarchSystem", "system"]

E = pb.ErrorCode

DEFAULT_TROOPS: dict[str, Any] = {
    "initial": {"infantry": 1000, "cavalry": 500, "archer": 500},
    "types": {
        "infantry": {"attack": 10, "defense": 12, "hp": 100, "speed": 1.0, "load": 10},
        "cavalry": {"attack": 14, "defense": 8, "hp": 90, "speed": 2.0, "load": 6},
        "archer": {"attack": 16, "defense": 6, "hp": 70, "speed": 1.25, "load": 8},
    },
    "march": {"max_marches": 5, "max_distance": 150, "gather_per_second": 50,
              "max_troops": 100_000},
}
"""Used when ``etc/game/troops.toml`` is missing (unit tests without tables)."""

GATHER, ATTACK = "gather", "attack"
OUTBOUND, STAYING, RETURNING = "outbound", "staying", "returning"
ARRIVE, GATHERED, HOME = "arrive", "gathered", "home"
TARGET_KIND = {GATHER: "resource", ATTACK: "monster"}


def troop_table(tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The troops table (``etc/game/troops.toml``), or the defaults."""
    return (tables or {}).get("troops") or DEFAULT_TROOPS


def distance(ax: float, ay: float, bx: float, by: float) -> float:
    """Euclidean distance between two tiles, in tiles."""
    return math.hypot(bx - ax, by - ay)


def clean_army(army: Mapping[str, Any]) -> dict[str, int]:
    """The army without zero counts (types as given)."""
    return {str(t): int(n) for t, n in army.items() if int(n) > 0}


class MarchSystem(System):
    name = "troops"

    # -- the player's troops (role node) ---------------------------------------------------

    def home(self, player: Entity) -> dict[str, int]:
        """The troops in the player's city (live dict)."""
        home: dict[str, int] = self.component(player).setdefault("home", {})
        return home

    def give_initial(self, player: Entity, tables: Mapping[str, Any] | None) -> bool:
        """Give a new player the initial troops once; True when given now."""
        c = self.component(player)
        if c.get("given"):
            return False
        home = c.setdefault("home", {})
        for t, n in (troop_table(tables).get("initial") or {}).items():
            home[t] = home.get(t, 0) + int(n)
        c["given"] = True
        player.mark_dirty()
        return True

    def check_army(self, player: Entity, army: Mapping[str, int],
                   tables: Mapping[str, Any] | None) -> int:
        """OK if *army* names known types, is not empty, within ``max_troops``, and the
        city has that many of each."""
        table = troop_table(tables)
        types = table.get("types") or {}
        if not army or any(t not in types or n <= 0 for t, n in army.items()):
            return int(E.BAD_REQUEST)
        if sum(army.values()) > int(table["march"]["max_troops"]):
            return int(E.BAD_REQUEST)
        home = self.home(player)
        if any(home.get(t, 0) < n for t, n in army.items()):
            return int(E.MARCH_NOT_ENOUGH_TROOPS)
        return int(E.OK)

    def take_for_march(self, player: Entity, tid: str, request: Mapping[str, Any],
                       tables: Mapping[str, Any] | None) -> int:
        """Take ``request["troops"]`` off the city and record the start *tid* (the caller
        saves before asking the map)."""
        army = clean_army(request["troops"])
        code = self.check_army(player, army, tables)
        if code != E.OK:
            return code
        home = self.home(player)
        for t, n in army.items():
            home[t] -= n
        self.component(player).setdefault("sending", {})[tid] = dict(request, troops=army)
        player.mark_dirty()
        return int(E.OK)

    def sending(self, player: Entity) -> dict[str, dict[str, Any]]:
        """Starts recorded and not yet confirmed by the map (live dict)."""
        found: dict[str, dict[str, Any]] = self.component(player).get("sending") or {}
        return found

    def start_refused(self, player: Entity, tid: str) -> bool:
        """The map refused the start *tid*: its troops come home; True if it was there."""
        entry = self.sending(player).pop(tid, None)
        if entry is None:
            return False
        home = self.home(player)
        for t, n in entry["troops"].items():
            home[t] = home.get(t, 0) + int(n)
        player.mark_dirty()
        return True

    def start_confirmed(self, player: Entity, tid: str) -> bool:
        """The map holds the march of *tid* (saved): drop the record."""
        if self.sending(player).pop(tid, None) is None:
            return False
        player.mark_dirty()
        return True

    def credit_troops(self, player: Entity, army: Mapping[str, Any]) -> None:
        """Troops coming home (a march's survivors, a GM grant)."""
        home = self.home(player)
        for t, n in army.items():
            if type(n) is not int or n < 0:
                raise ValueError(f"bad troop count {t}={n!r}")
        for t, n in army.items():
            home[str(t)] = home.get(str(t), 0) + n
        player.mark_dirty()

    # -- marches (map node) ----------------------------------------------------------------

    def speed(self, army: Mapping[str, int], tables: Mapping[str, Any] | None) -> float:
        """Tiles per second of *army*: its slowest type's."""
        types = troop_table(tables)["types"]
        return float(min(types[t]["speed"] for t in army))

    def capacity(self, army: Mapping[str, int], tables: Mapping[str, Any] | None) -> int:
        """Resources *army* carries home at most."""
        types = troop_table(tables)["types"]
        return sum(int(n) * int(types.get(t, {}).get("load", 0)) for t, n in army.items())

    @staticmethod
    def travel_ms(dist: float, speed: float) -> int:
        """Milliseconds to travel *dist* tiles at *speed* tiles/s (at least 1)."""
        return max(1, math.ceil(dist / speed * 1000))

    def check_target(self, mtype: str, target: Entity | None, owner: int, dist: float,
                     in_flight: int, tables: Mapping[str, Any] | None) -> int:
        """OK if a march of *mtype* may go to *target* (the entity on the tile) at *dist*
        tiles from the city while the player has *in_flight* marches."""
        limits = troop_table(tables)["march"]
        if mtype not in TARGET_KIND:
            return int(E.BAD_REQUEST)
        if in_flight >= int(limits["max_marches"]):
            return int(E.MARCH_TOO_MANY)
        if target is None or target.get("kind") != TARGET_KIND[mtype]:
            return int(E.MARCH_BAD_TARGET)
        if mtype == GATHER and target.get("owner", 0) not in (0, owner):
            return int(E.MARCH_BAD_TARGET)
        if dist > int(limits["max_distance"]):
            return int(E.MARCH_TOO_FAR)
        return int(E.OK)

    def new_march(self, owner: int, mtype: str, army: Mapping[str, int], city: Entity,
                  target: Entity, tid: str, now_ms: int,
                  tables: Mapping[str, Any] | None) -> dict[str, Any]:
        """The attributes of a march leaving *city* for *target* now."""
        speed = self.speed(army, tables)
        hx, hy = city["x"], city["y"]
        tx, ty = target["x"], target["y"]
        arrive = now_ms + self.travel_ms(distance(hx, hy, tx, ty), speed)
        return {"kind": "march", "owner": owner, "type": mtype, "state": OUTBOUND,
                "x": hx, "y": hy, "from_x": hx, "from_y": hy, "to_x": tx, "to_y": ty,
                "start_ms": now_ms, "arrive_ms": arrive, "speed": speed,
                "troops": sum(army.values()), "army": dict(army), "target": int(target.id),
                "home_x": hx, "home_y": hy, "load": {}, "tid": tid, "event": ARRIVE,
                "due_ms": arrive, "gather_ms": 0}

    @staticmethod
    def position(march: Entity, now_ms: int) -> tuple[int, int]:
        """The tile the march is on at *now_ms* (on its line; staying: where it stays)."""
        start, arrive = march["start_ms"], march["arrive_ms"]
        if march["state"] == STAYING or arrive <= start:
            return march["to_x"], march["to_y"]
        f = min(1.0, max(0.0, (now_ms - start) / (arrive - start)))
        x = march["from_x"] + (march["to_x"] - march["from_x"]) * f
        y = march["from_y"] + (march["to_y"] - march["from_y"]) * f
        return round(x), round(y)

    def go_home(self, march: Entity, now_ms: int) -> dict[str, Any]:
        """The changes turning *march* home from where it is at *now_ms*."""
        x, y = self.position(march, now_ms)
        hx, hy = march["home_x"], march["home_y"]
        speed = float(march["speed"])
        arrive = now_ms + self.travel_ms(distance(x, y, hx, hy), speed)
        return {"state": RETURNING, "x": x, "y": y, "from_x": x, "from_y": y, "to_x": hx,
                "to_y": hy, "start_ms": now_ms, "arrive_ms": arrive, "target": 0,
                "event": HOME, "due_ms": arrive}

    def stay(self, march: Entity, point: Entity, now_ms: int,
             tables: Mapping[str, Any] | None) -> dict[str, Any]:
        """The changes of a gathering march that reached *point*: it stays until it is
        full or the point is empty (at ``gather_per_second``)."""
        want = self.room(march, tables)
        amount = min(want, int(point.get("amount", 0) or 0))
        rate = int(troop_table(tables)["march"]["gather_per_second"])
        done = now_ms + max(1, math.ceil(amount / rate * 1000))
        return {"state": STAYING, "x": point["x"], "y": point["y"], "from_x": point["x"],
                "from_y": point["y"], "to_x": point["x"], "to_y": point["y"],
                "start_ms": now_ms, "arrive_ms": done, "gather_ms": now_ms,
                "event": GATHERED, "due_ms": done}

    def room(self, march: Entity, tables: Mapping[str, Any] | None) -> int:
        """What the march can still load."""
        loaded = sum((march.get("load") or {}).values())
        return max(0, self.capacity(march["army"], tables) - loaded)

    def gathered_so_far(self, march: Entity, now_ms: int,
                        tables: Mapping[str, Any] | None) -> int:
        """What a staying march has loaded by *now_ms* (at most its room)."""
        rate = int(troop_table(tables)["march"]["gather_per_second"])
        took = (now_ms - int(march.get("gather_ms") or now_ms)) * rate // 1000
        return max(0, min(self.room(march, tables), took))

    @staticmethod
    def add_load(march: Entity, items: Mapping[str, int]) -> None:
        load = dict(march.get("load") or {})
        for res, n in items.items():
            if n > 0:
                load[res] = load.get(res, 0) + int(n)
        march["load"] = load

    @staticmethod
    def return_items(march: Entity) -> dict[str, Any]:
        """What the march brings home: ``{"troops": army, "load": resources}``."""
        return {"troops": dict(march["army"]), "load": dict(march.get("load") or {})}


system = MarchSystem()
