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


VALIDATORS: dict[str, Validator] = {
    "name_rules": validate_name_rules,
    "building_costs": validate_building_costs,
    # -- chat --

    # -- mail and gifts --
    "mail": validate_mail,
    "gifts": validate_gifts,

    # -- friends --

    # -- guilds --

    # -- activities --
}
