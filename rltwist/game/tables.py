"""The game's config tables: what ``etc/game/`` must contain and how each is checked.

``VALIDATORS`` is what a node passes to ``rltwist.ecs.sharedata.shared()``; each validator
yields ``(key, message)`` for every problem so a bad reload names the exact key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rltwist.ecs.sharedata import Validator

__all__ = ["CHARSETS", "RESOURCES", "VALIDATORS", "char_class"]

#: Resources a role holds as basic attributes (seed §13: gold, food, oil).
RESOURCES: tuple[str, ...] = ("gold", "food", "oil")

#: Character classes a name rule may allow, as code point ranges, and whether such a
#: character is "wide" (counts ``wide_char_width`` towards the length).
CHARSETS: dict[str, tuple[tuple[tuple[int, int], ...], bool]] = {
    "latin": (((0x41, 0x5A), (0x61, 0x7A)), False),
    "digit": (((0x30, 0x39),), False),
    "cjk": (((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)), True),
    "kana": (((0x3041, 0x30FF),), True),
    "hangul": (((0xAC00, 0xD7A3),), True),
}


def char_class(ch: str) -> tuple[str, bool] | None:
    """Return ``(charset name, is wide)`` for one character, or None if in no charset."""
    code = ord(ch)
    for name, (ranges, wide) in CHARSETS.items():
        for low, high in ranges:
            if low <= code <= high:
                return name, wide
    return None


def _is_int(value: Any, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def validate_name_rules(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``name_rules``: lengths, charsets, extra characters, forbidden words."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = {"min_length", "max_length", "wide_char_width", "charsets", "extra_chars",
             "forbidden"}
    for key in sorted(set(table) - known):
        yield key, "unknown key"
    min_length = table.get("min_length")
    max_length = table.get("max_length")
    if not _is_int(min_length, 1):
        yield "min_length", "must be an integer >= 1"
    if not isinstance(max_length, int) or not _is_int(max_length, 1):
        yield "max_length", "must be an integer >= 1"
    elif isinstance(min_length, int) and _is_int(min_length, 1) and max_length < min_length:
        yield "max_length", f"must not be below min_length ({min_length})"
    if not _is_int(table.get("wide_char_width", 1), 1):
        yield "wide_char_width", "must be an integer >= 1"
    charsets = table.get("charsets")
    if not isinstance(charsets, tuple) or not charsets:
        yield "charsets", f"must be a non-empty list of {sorted(CHARSETS)}"
    else:
        for i, name in enumerate(charsets):
            if name not in CHARSETS:
                yield f"charsets[{i}]", f"unknown charset {name!r}; use {sorted(CHARSETS)}"
    if not isinstance(table.get("extra_chars", ""), str):
        yield "extra_chars", "must be a string"
    forbidden = table.get("forbidden", ())
    if not isinstance(forbidden, tuple):
        yield "forbidden", "must be a list of strings"
    else:
        for i, word in enumerate(forbidden):
            if not isinstance(word, str) or not word:
                yield f"forbidden[{i}]", "must be a non-empty string"


def validate_building_costs(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``building_costs``: per building, levels 1..n in order with resource costs."""
    if not isinstance(table, Mapping) or not table:
        yield "", "must be a non-empty table of buildings"
        return
    allowed = {"level", "seconds", *RESOURCES}
    for building, levels in table.items():
        if not isinstance(levels, tuple) or not levels:
            yield building, "must be a non-empty array of tables ([[building]])"
            continue
        for i, entry in enumerate(levels):
            where = f"{building}[{i}]"
            if not isinstance(entry, Mapping):
                yield where, "must be a table"
                continue
            if entry.get("level") != i + 1 or type(entry.get("level")) is not int:
                yield f"{where}.level", f"must be {i + 1} (levels start at 1, in order)"
            for key, value in entry.items():
                if key not in allowed:
                    yield f"{where}.{key}", f"unknown key; use {sorted(allowed)}"
                elif key != "level" and not _is_int(value, 0):
                    yield f"{where}.{key}", "must be a non-negative integer"


def validate_mail(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``mail``: expiry, mailbox cap, MailSend limits, key memory (positive ints)."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = ("expire_days", "max_mails", "max_title", "max_body", "key_days")
    for key in sorted(set(table) - set(known)):
        yield key, "unknown key"
    for key in known:
        if not _is_int(table.get(key), 1):
            yield key, "must be an integer >= 1"


def validate_gifts(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``gifts``: gifts per day and the daily amount of each giftable resource."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    for key in sorted(set(table) - {"max_per_day", "max_amount_per_day"}):
        yield key, "unknown key"
    if not _is_int(table.get("max_per_day"), 1):
        yield "max_per_day", "must be an integer >= 1"
    amounts = table.get("max_amount_per_day")
    if not isinstance(amounts, Mapping):
        yield "max_amount_per_day", "must be a table of resource = amount"
        return
    for res, n in amounts.items():
        if res not in RESOURCES:
            yield f"max_amount_per_day.{res}", f"unknown resource; use {list(RESOURCES)}"
        elif not _is_int(n, 1):
            yield f"max_amount_per_day.{res}", "must be an integer >= 1"


#: What a guild role may be allowed to do (etc/game/guilds.toml ``[roles]``).
GUILD_PERMISSIONS: tuple[str, ...] = ("approve", "kick", "set_role", "transfer", "disband")
GUILD_ROLES: tuple[str, ...] = ("leader", "officer", "member")


def validate_guilds(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``guilds``: member and application caps, name lengths, cost, role
    permissions."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = {"max_members", "max_applications", "name_min_length", "name_max_length",
             "cost", "roles"}
    for key in sorted(set(table) - known):
        yield key, "unknown key"
    for key in ("max_members", "max_applications", "name_min_length", "name_max_length"):
        if not _is_int(table.get(key), 1):
            yield key, "must be an integer >= 1"
    low, high = table.get("name_min_length"), table.get("name_max_length")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        yield "name_max_length", f"must not be below name_min_length ({low})"
    if isinstance(high, int) and high > 32:
        yield "name_max_length", "must be at most 32"
    cost = table.get("cost", {})
    if not isinstance(cost, Mapping):
        yield "cost", f"must be a table of {list(RESOURCES)}"
    else:
        for res, n in cost.items():
            if res not in RESOURCES:
                yield f"cost.{res}", f"unknown resource; use {list(RESOURCES)}"
            elif not _is_int(n, 0):
                yield f"cost.{res}", "must be a non-negative integer"
    roles = table.get("roles")
    if not isinstance(roles, Mapping):
        yield "roles", f"must be a table with {list(GUILD_ROLES)}"
        return
    for role in GUILD_ROLES:
        if role not in roles:
            yield f"roles.{role}", "missing"
    for role, perms in roles.items():
        if role not in GUILD_ROLES:
            yield f"roles.{role}", f"unknown role; use {list(GUILD_ROLES)}"
        elif not isinstance(perms, tuple):
            yield f"roles.{role}", f"must be a list of {list(GUILD_PERMISSIONS)}"
        else:
            for i, perm in enumerate(perms):
                if perm not in GUILD_PERMISSIONS:
                    yield f"roles.{role}[{i}]", f"unknown permission; use {list(GUILD_PERMISSIONS)}"
def validate_activities(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``activities``: per kind a title, duration bounds and integer parameters."""
    if not isinstance(table, Mapping):
        yield "", "must be a table of activity kinds"
        return
    known = {"title", "min_seconds", "max_seconds", "params"}
    for kind, spec in table.items():
        if not isinstance(spec, Mapping):
            yield kind, "must be a table"
            continue
        for key in sorted(set(spec) - known):
            yield f"{kind}.{key}", f"unknown key; use {sorted(known)}"
        title = spec.get("title")
        if not isinstance(title, str) or not 0 < len(title) <= 64:
            yield f"{kind}.title", "must be a string of 1-64 characters"
        shortest, longest = spec.get("min_seconds"), spec.get("max_seconds")
        if not _is_int(shortest, 1):
            yield f"{kind}.min_seconds", "must be an integer >= 1"
        if not isinstance(longest, int) or not _is_int(longest, 1):
            yield f"{kind}.max_seconds", "must be an integer >= 1"
        elif isinstance(shortest, int) and _is_int(shortest, 1) and longest < shortest:
            yield f"{kind}.max_seconds", f"must not be below min_seconds ({shortest})"
        params = spec.get("params", {})
        if not isinstance(params, Mapping):
            yield f"{kind}.params", "must be a table of parameters"
            continue
        for name, p in params.items():
            where = f"{kind}.params.{name}"
            if not isinstance(p, Mapping):
                yield where, "must be a table with min, max, default"
                continue
            for key in sorted(set(p) - {"min", "max", "default"}):
                yield f"{where}.{key}", "unknown key; use ['default', 'max', 'min']"
            low, default, high = (p.get(k) for k in ("min", "default", "max"))
            if not (type(low) is int and type(default) is int and type(high) is int):
                yield where, "min, max and default must be integers"
            elif not low <= default <= high:
                yield where, "must have min <= default <= max"


def validate_friends(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``friends``: the friend-list cap, requests waiting, block-list cap."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = ("max_friends", "max_requests_in", "max_blocked")
    for key in known:
        if not _is_int(table.get(key), 1):
            yield key, "must be an integer >= 1"
    for key in table:
        if key not in known:
            yield key, f"unknown key; use {list(known)}"


CHAT_MAX_TEXT = 256
"""The longest chat text the protocol allows (``chat.max_length`` may only lower it)."""


def validate_chat(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``chat``: text length, rate limit (token bucket), history and backlog sizes."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = {"max_length", "rate", "burst", "history", "offline_backlog"}
    for key in sorted(set(table) - known):
        yield key, "unknown key"
    for key in sorted(known - set(table)):
        yield key, "missing"
    max_length = table.get("max_length")
    if not isinstance(max_length, int) or not _is_int(max_length, 1) \
            or max_length > CHAT_MAX_TEXT:
        yield "max_length", f"must be an integer 1..{CHAT_MAX_TEXT}"
    rate = table.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1000:
        yield "rate", "must be a number of messages per second, 0 < rate <= 1000"
    if not _is_int(table.get("burst"), 1):
        yield "burst", "must be an integer >= 1"
    for key in ("history", "offline_backlog"):
        value = table.get(key)
        if not isinstance(value, int) or not _is_int(value, 1) or value > 1000:
            yield key, "must be an integer 1..1000"


# -- marches and battle --

TROOP_STATS = ("attack", "defense", "hp", "speed", "load")
MARCH_KEYS = ("max_marches", "max_distance", "gather_per_second", "max_troops")


def _is_number(value: Any, above: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > above


def validate_troops(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``troops``: troop types and their stats, initial troops, march limits."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    for key in sorted(set(table) - {"initial", "types", "march"}):
        yield key, "unknown key; use initial, types, march"
    types = table.get("types")
    if not isinstance(types, Mapping) or not types:
        yield "types", "must be a table of troop types"
        types = {}
    for name, stats in types.items():
        if not isinstance(stats, Mapping):
            yield f"types.{name}", "must be a table"
            continue
        for key in sorted(set(stats) - set(TROOP_STATS)):
            yield f"types.{name}.{key}", f"unknown key; use {list(TROOP_STATS)}"
        for key in ("attack", "defense", "load"):
            if not _is_int(stats.get(key), 0):
                yield f"types.{name}.{key}", "must be an integer >= 0"
        if not _is_int(stats.get("hp"), 1):
            yield f"types.{name}.hp", "must be an integer >= 1"
        if not _is_number(stats.get("speed"), 0):
            yield f"types.{name}.speed", "must be a number of tiles per second > 0"
    initial = table.get("initial", {})
    if not isinstance(initial, Mapping):
        yield "initial", "must be a table of troop type = count"
    else:
        for name, n in initial.items():
            if name not in types:
                yield f"initial.{name}", f"unknown troop type; use {sorted(types)}"
            elif not _is_int(n, 0):
                yield f"initial.{name}", "must be an integer >= 0"
    march = table.get("march")
    if not isinstance(march, Mapping):
        yield "march", "must be a table"
        return
    for key in sorted(set(march) - set(MARCH_KEYS)):
        yield f"march.{key}", f"unknown key; use {list(MARCH_KEYS)}"
    for key in MARCH_KEYS:
        if not _is_int(march.get(key), 1):
            yield f"march.{key}", "must be an integer >= 1"


def validate_battle(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``battle``: the RNG seed, rounds, variance and the monster levels."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    for key in sorted(set(table) - {"seed", "rounds", "variance_percent", "monster"}):
        yield key, "unknown key; use seed, rounds, variance_percent, monster"
    if not _is_int(table.get("seed"), 0):
        yield "seed", "must be an integer >= 0"
    rounds = table.get("rounds")
    if not isinstance(rounds, int) or not _is_int(rounds, 1) or rounds > 100:
        yield "rounds", "must be an integer 1..100"
    variance = table.get("variance_percent")
    if not isinstance(variance, int) or not _is_int(variance, 0) or variance > 100:
        yield "variance_percent", "must be an integer 0..100"
    monsters = table.get("monster")
    if not isinstance(monsters, tuple) or not monsters:
        yield "monster", "must be a non-empty list of [[monster]] tables"
        return
    levels: set[int] = set()
    for i, m in enumerate(monsters):
        where = f"monster[{i}]"
        if not isinstance(m, Mapping):
            yield where, "must be a table"
            continue
        known = {"level", "count", "attack", "defense", "hp", "rewards"}
        for key in sorted(set(m) - known):
            yield f"{where}.{key}", f"unknown key; use {sorted(known)}"
        level = m.get("level")
        if not isinstance(level, int) or not _is_int(level, 1):
            yield f"{where}.level", "must be an integer >= 1"
        elif level in levels:
            yield f"{where}.level", f"level {level} is listed twice"
        else:
            levels.add(level)
        for key in ("count", "hp"):
            if not _is_int(m.get(key), 1):
                yield f"{where}.{key}", "must be an integer >= 1"
        for key in ("attack", "defense"):
            if not _is_int(m.get(key), 0):
                yield f"{where}.{key}", "must be an integer >= 0"
        rewards = m.get("rewards", {})
        if not isinstance(rewards, Mapping):
            yield f"{where}.rewards", "must be a table of resource = amount"
            continue
        for res, n in rewards.items():
            if res not in RESOURCES:
                yield f"{where}.rewards.{res}", f"unknown resource; use {list(RESOURCES)}"
            elif not _is_int(n, 0):
                yield f"{where}.rewards.{res}", "must be an integer >= 0"

def _positive_int(table: Mapping[str, Any], key: str, where: str, low: int, high: int
                  ) -> Iterator[tuple[str, str]]:
    value = table.get(key)
    if type(value) is not int or not low <= value <= high:
        yield f"{where}{key}", f"must be an integer {low}..{high}"


def validate_world(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``world``: the refresh timer, city spacing, resource points and monsters
    (docs/world.md "Resources and monsters")."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    known = {"refresh_seconds", "refresh_batch", "cities", "resources", "monsters"}
    for key in sorted(set(table) - known):
        yield key, f"unknown key; use {sorted(known)}"
    yield from _positive_int(table, "refresh_seconds", "", 1, 3600)
    yield from _positive_int(table, "refresh_batch", "", 1, 100_000)
    cities = table.get("cities")
    if not isinstance(cities, Mapping):
        yield "cities", "must be a table with spacing"
    else:
        for key in sorted(set(cities) - {"spacing"}):
            yield f"cities.{key}", "unknown key; use ['spacing']"
        yield from _positive_int(cities, "spacing", "cities.", 1, 16)
    resources = table.get("resources")
    if not isinstance(resources, Mapping):
        yield "resources", f"must be a table of {list(RESOURCES)}"
    else:
        for name, spec in resources.items():
            where = f"resources.{name}"
            if name not in RESOURCES:
                yield where, f"unknown resource; use {list(RESOURCES)}"
                continue
            if not isinstance(spec, Mapping):
                yield where, "must be a table with count, amounts, respawn_seconds"
                continue
            for key in sorted(set(spec) - {"count", "amounts", "respawn_seconds"}):
                yield f"{where}.{key}", "unknown key; use ['amounts', 'count', 'respawn_seconds']"
            yield from _positive_int(spec, "count", f"{where}.", 0, 1_000_000)
            yield from _positive_int(spec, "respawn_seconds", f"{where}.", 0, 86400 * 30)
            amounts = spec.get("amounts")
            if not isinstance(amounts, tuple) or not 1 <= len(amounts) <= 100 \
                    or not all(type(a) is int and 1 <= a <= 2**40 for a in amounts):
                yield f"{where}.amounts", "must be a list of 1-100 amounts >= 1 (level n: " \
                                          "amounts[n - 1])"
    monsters = table.get("monsters")
    if not isinstance(monsters, Mapping):
        yield "monsters", "must be a table with count, max_level, respawn_seconds"
    else:
        for key in sorted(set(monsters) - {"count", "max_level", "respawn_seconds"}):
            yield f"monsters.{key}", "unknown key; use ['count', 'max_level', 'respawn_seconds']"
        yield from _positive_int(monsters, "count", "monsters.", 0, 1_000_000)
        yield from _positive_int(monsters, "max_level", "monsters.", 1, 100)
        yield from _positive_int(monsters, "respawn_seconds", "monsters.", 0, 86400 * 30)


def validate_movecity(table: Any) -> Iterator[tuple[str, str]]:
    """Check ``movecity``: ``[cost]`` maps resources to amounts >= 0 (docs/world.md
    "Moving a city")."""
    if not isinstance(table, Mapping):
        yield "", "must be a table"
        return
    for key in sorted(set(table) - {"cost"}):
        yield key, "unknown key; use ['cost']"
    cost = table.get("cost", {})
    if not isinstance(cost, Mapping):
        yield "cost", "must be a table of resource = amount"
        return
    for res, amount in cost.items():
        if res not in RESOURCES:
            yield f"cost.{res}", f"unknown resource; use {list(RESOURCES)}"
        elif type(amount) is not int or not 0 <= amount <= 2**40:
            yield f"cost.{res}", "must be an integer 0..2**40"


VALIDATORS: dict[str, Validator] = {
    "name_rules": validate_name_rules,
    "building_costs": validate_building_costs,
    # -- chat --
    "chat": validate_chat,

    # -- mail and gifts --
    "mail": validate_mail,
    "gifts": validate_gifts,

    # -- friends --
    "friends": validate_friends,

    # -- guilds --
    "guilds": validate_guilds,

    # -- activities --
    "activities": validate_activities,

    # -- marches and battle --
    "troops": validate_troops,
    "battle": validate_battle,

    # -- world map --
    "world": validate_world,

    # -- regions: moving a city --
    "movecity": validate_movecity,
}
