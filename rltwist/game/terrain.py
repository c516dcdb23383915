"""Terrain: a pure function of (region seed, x, y), computed by server and clients alike.

Nothing about terrain is stored or sent: a client that knows a map's ``MapInfo.seed``
computes every tile itself with the steps below (docs/world.md "Map" spells them out for
client programmers). Everything is unsigned 64-bit integer arithmetic (wrap-around
multiplication), so every language gets the same tiles.

    mix(v):        v ^= v >> 30; v *= 0xBF58476D1CE4E5B9
                   v ^= v >> 27; v *= 0x94D049BB133111EB
                   v ^= v >> 31                      (splitmix64's finaliser, mod 2**64)
    noise(s, a, b) = mix(s ^ mix(a << 32 | b)) mod 65536       (a, b < 2**32)
    field(s, x, y): value noise on a lattice of CELL = 8 tiles, integer bilinear:
        cx, fx = divmod(x, CELL); cy, fy = divmod(y, CELL)
        v00, v10 = noise(s, cx, cy), noise(s, cx + 1, cy)
        v01, v11 = noise(s, cx, cy + 1), noise(s, cx + 1, cy + 1)
        top    = v00 * (CELL - fx) + v10 * fx
        bottom = v01 * (CELL - fx) + v11 * fx
        field  = (top * (CELL - fy) + bottom * fy) // (CELL * CELL)      (0..65535)
    elevation = field(seed, x, y); moisture = field(seed ^ 0x5DEECE66D, x, y)
    terrain: water    if elevation <  WATER_BELOW  (17000)
             mountain if elevation >= MOUNTAIN_FROM (48000)
             forest   if moisture  >= FOREST_FROM  (36000)
             plains   otherwise

Water and mountain tiles are blocked: no city, resource point or monster stands on one.
The seed is taken mod 2**64 (``[map] seed`` in the cluster config, per region).
"""

from __future__ import annotations

__all__ = ["BLOCKED", "FOREST", "MOUNTAIN", "PLAINS", "TERRAINS", "WATER", "blocked",
           "elevation", "moisture", "terrain"]

PLAINS, FOREST, MOUNTAIN, WATER = "plains", "forest", "mountain", "water"
TERRAINS = (PLAINS, FOREST, MOUNTAIN, WATER)
BLOCKED = frozenset((MOUNTAIN, WATER))

CELL = 8
WATER_BELOW = 17000
MOUNTAIN_FROM = 48000
FOREST_FROM = 36000
MOISTURE_SALT = 0x5DEECE66D
MASK = (1 << 64) - 1


def mix(v: int) -> int:
    """splitmix64's finaliser: a 64-bit avalanche hash of *v* (mod 2**64)."""
    v &= MASK
    v ^= v >> 30
    v = (v * 0xBF58476D1CE4E5B9) & MASK
    v ^= v >> 27
    v = (v * 0x94D049BB133111EB) & MASK
    v ^= v >> 31
    return v


def noise(seed: int, a: int, b: int) -> int:
    """The 16-bit value of lattice point (a, b) for *seed*."""
    return mix((seed & MASK) ^ mix((a << 32) | b)) % 65536


def field(seed: int, x: int, y: int) -> int:
    """Integer bilinear value noise at tile (x, y): 0..65535 (module docstring)."""
    cx, fx = divmod(x, CELL)
    cy, fy = divmod(y, CELL)
    top = noise(seed, cx, cy) * (CELL - fx) + noise(seed, cx + 1, cy) * fx
    bottom = noise(seed, cx, cy + 1) * (CELL - fx) + noise(seed, cx + 1, cy + 1) * fx
    return (top * (CELL - fy) + bottom * fy) // (CELL * CELL)


def elevation(seed: int, x: int, y: int) -> int:
    """The elevation of tile (x, y): 0..65535."""
    return field(seed, x, y)


def moisture(seed: int, x: int, y: int) -> int:
    """The moisture of tile (x, y): 0..65535."""
    return field((seed & MASK) ^ MOISTURE_SALT, x, y)


def terrain(seed: int, x: int, y: int) -> str:
    """The terrain of tile (x, y) of a map with *seed*: plains, forest, mountain or water."""
    e = field(seed, x, y)
    if e < WATER_BELOW:
        return WATER
    if e >= MOUNTAIN_FROM:
        return MOUNTAIN
    if moisture(seed, x, y) >= FOREST_FROM:
        return FOREST
    return PLAINS


def blocked(seed: int, x: int, y: int) -> bool:
    """Whether nothing may stand on tile (x, y) (water or mountain)."""
    return terrain(seed, x, y) in BLOCKED
