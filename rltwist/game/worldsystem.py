"""World system: the rules of a region's map (issue 13 "World") — where a city goes, what a
new resource point or monster is, what taking from a point leaves, what a refresh places.

Nothing here does I/O or keeps state: the map node's ``world`` service
(``rltwist.nodes.map.world``) holds the :class:`~rltwist.nodes.map.state.WorldState` and
calls these through ``import_system`` so ``POST /hotfix`` changes them in a running map.
The table is ``etc/game/world.toml`` (``sharedata().snapshot["world"]``).

City placement (docs/world.md "Cities"): candidates are the points of a square lattice of
step ``cities.spacing`` around the map centre, visited in square-spiral order (index k:
:func:`spiral`), each shifted by a jitter of 0..spacing-2 tiles per axis drawn from
``mix(seed ^ mix(k))``. The first candidate inside the map, on an unblocked tile and free
is taken; the map remembers the next index (``city_cursor``), so placing 10k cities walks
the spiral once. Candidates passed over (blocked, taken) are never revisited. Once the
spiral has left the map, the first free unblocked tile in row order is taken; none left:
MAP_FULL.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from math import isqrt
from typing import Any

from rltwist.ecs.system import System
from rltwist.game.terrain import blocked, mix

__all__ = ["MONSTER", "RESOURCE", "WorldSystem", "spiral", "system"]

MONSTER = "monster"
RESOURCE = "resource"
SPAWN_TRIES = 64
"""Random tiles tried for one spawn before it waits for the next refresh."""


def spiral(k: int) -> tuple[int, int]:
    """The k-th point of the square spiral around (0, 0): 0 -> (0, 0), then ring r (the
    points at Chebyshev distance r, indices (2r-1)**2 .. (2r+1)**2 - 1) starting at
    (r, 1 - r) and going up the right side, left along the top, down the left side and
    right along the bottom."""
    if k <= 0:
        return 0, 0
    r = (isqrt(k) + 1) // 2
    p = k - (2 * r - 1) ** 2
    if p < 2 * r:
        return r, 1 - r + p
    if p < 4 * r:
        return r - 1 - (p - 2 * r), r
    if p < 6 * r:
        return -r, r - 1 - (p - 4 * r)
    return -r + 1 + (p - 6 * r), -r


class WorldSystem(System):
    """Map rules: placement, spawns, taking, refresh (module docstring)."""

    name = "world"

    # -- cities ----------------------------------------------------------------------------

    def city_candidate(self, k: int, seed: int, spacing: int, width: int,
                       height: int) -> tuple[int, int]:
        """The tile of spiral candidate *k* (may be outside the map)."""
        i, j = spiral(k)
        jx = jy = 0
        if spacing > 1:
            h = mix((seed & ((1 << 64) - 1)) ^ mix(k))
            jx, jy = h % (spacing - 1), (h >> 32) % (spacing - 1)
        return width // 2 + i * spacing + jx, height // 2 + j * spacing + jy

    def place_city(self, state: Any, seed: int, cursor: int, spacing: int,
                   is_blocked: Callable[[int, int], bool] | None = None
                   ) -> tuple[int, int, int] | None:
        """``(x, y, next cursor)`` of the next city of the map, or None when the map is
        full. *state* is the map's WorldState (``inside``, ``at``, ``width``, ``height``)."""
        test = is_blocked or (lambda x, y: blocked(seed, x, y))
        w, h = state.width, state.height
        last_ring = max(w, h) // (2 * spacing) + 2
        k = cursor
        while True:
            i, j = spiral(k)
            if max(abs(i), abs(j)) > last_ring:
                break
            x, y = self.city_candidate(k, seed, spacing, w, h)
            k += 1
            if state.inside(x, y) and state.at(x, y) is None and not test(x, y):
                return x, y, k
        for y in range(h):  # the spiral has left the map: any free tile will do
            for x in range(w):
                if state.at(x, y) is None and not test(x, y):
                    return x, y, k
        return None

    # -- resource points and monsters --------------------------------------------------------

    def rng(self, seed: int, serial: int) -> random.Random:
        """The generator of the map's *serial*-th spawn (its own instance: no module
        state, the same seed and history give the same map)."""
        return random.Random(mix((seed & ((1 << 64) - 1)) ^ mix(serial + 1)))

    def spawn_tile(self, rng: random.Random, state: Any, seed: int,
                   is_blocked: Callable[[int, int], bool] | None = None
                   ) -> tuple[int, int] | None:
        """A free unblocked tile drawn at random (None after SPAWN_TRIES misses)."""
        test = is_blocked or (lambda x, y: blocked(seed, x, y))
        for _ in range(SPAWN_TRIES):
            x, y = rng.randrange(state.width), rng.randrange(state.height)
            if state.at(x, y) is None and not test(x, y):
                return x, y
        return None

    def new_entity(self, rng: random.Random, what: str, table: Mapping[str, Any]
                   ) -> dict[str, Any]:
        """The attributes (without x, y) of a new entity of spawn key *what*
        (``resource:<name>`` or ``monster``)."""
        if what == MONSTER:
            return {"kind": MONSTER, "level": rng.randint(1, table["monsters"]["max_level"])}
        resource = what.split(":", 1)[1]
        amounts = table["resources"][resource]["amounts"]
        level = rng.randint(1, len(amounts))
        return {"kind": RESOURCE, "resource": resource, "level": level,
                "amount": int(amounts[level - 1]), "owner": 0}

    def spawn_key(self, entity: Any) -> str | None:
        """The spawn key of a world entity (None for cities and marches)."""
        kind = entity.get("kind")
        if kind == MONSTER:
            return MONSTER
        if kind == RESOURCE:
            return f"{RESOURCE}:{entity.get('resource')}"
        return None

    def respawn_seconds(self, what: str, table: Mapping[str, Any]) -> int:
        """How long a depleted point / defeated monster of *what* waits to reappear."""
        if what == MONSTER:
            return int(table["monsters"]["respawn_seconds"])
        resource = what.split(":", 1)[1]
        spec = table["resources"].get(resource)
        return int(spec["respawn_seconds"]) if spec is not None else 0

    def targets(self, table: Mapping[str, Any]) -> dict[str, int]:
        """How many of each spawn key a map keeps."""
        found = {f"{RESOURCE}:{name}": int(spec["count"])
                 for name, spec in table["resources"].items()}
        found[MONSTER] = int(table["monsters"]["count"])
        return found

    def take(self, amount_left: int, wanted: int) -> tuple[int, int]:
        """``(taken, left)`` when *wanted* is taken from a point holding *amount_left*."""
        taken = max(0, min(int(wanted), int(amount_left)))
        return taken, int(amount_left) - taken

    def refresh_plan(self, counts: Mapping[str, int], pending: list[dict[str, Any]],
                     table: Mapping[str, Any], now_ms: int) -> tuple[list[str],
                                                                      list[dict[str, Any]]]:
        """What one refresh places: ``(spawn keys, pending kept)``. Respawns whose
        ``due_ms`` passed come first (oldest first); then every key with fewer live plus
        waiting entities than its target is topped up (a first start, a raised count). At
        most ``refresh_batch`` keys; what does not fit stays for the next refresh."""
        batch = int(table["refresh_batch"])
        targets = self.targets(table)
        due = sorted((p for p in pending if p["due_ms"] <= now_ms), key=lambda p: p["due_ms"])
        waiting = [p for p in pending if p["due_ms"] > now_ms]
        plan: list[str] = []
        for p in due:
            if len(plan) < batch and p["what"] in targets:
                plan.append(p["what"])
            elif p["what"] in targets:
                waiting.append(p)
            # a key no longer in the table (a resource removed) is dropped
        have = dict(counts)
        for p in [*waiting, *({"what": w} for w in plan)]:
            have[p["what"]] = have.get(p["what"], 0) + 1
        for what, target in targets.items():
            missing = target - have.get(what, 0)
            while missing > 0 and len(plan) < batch:
                plan.append(what)
                missing -= 1
        return plan, waiting


system = WorldSystem()
