"""Game config tables shared read-only by every service of a process (seed §12).

Every ``*.toml``/``*.json`` file of the table directory (``etc/game/``) is one table, named
after the file stem.  All tables are deep-frozen (dicts become ``MappingProxyType``, lists
become tuples) and held together in one ``ConfigSnapshot``.  ``ShareData.reload()`` builds
and checks a complete new snapshot before replacing the old one with a single reference
assignment, so a reader that takes ``sd.snapshot`` once per request sees all-old or all-new
tables, never a mix.  Readers must not call ``sd.table()`` twice within one request when the
two values have to agree; take the snapshot once and index it.

A file that does not parse, or a table its validator rejects, fails the whole reload with a
``ConfigError`` naming every bad file and key; the old snapshot stays in service.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rltwist.ecs.poller import PollingService

__all__ = [
    "ConfigError",
    "ConfigSnapshot",
    "ShareData",
    "TableProblem",
    "Validator",
    "freeze",
    "shared",
    "sharedata_poller",
]

log = Logger()

TABLE_SUFFIXES = (".toml", ".json")

#: A validator gets one frozen table and yields ``(key, message)`` for each problem.
Validator = Callable[[Any], Iterable[tuple[str, str]]]


@attrs.frozen
class TableProblem:
    """One thing wrong with a table file."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else (
            f"{self.file}: {self.message}"
        )


class ConfigError(Exception):
    """The table directory cannot be loaded; ``problems`` lists every bad file and key."""

    def __init__(self, problems: Sequence[TableProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("config tables rejected: " + "; ".join(map(str, self.problems)))


def freeze(value: Any) -> Any:
    """Return a deep read-only copy: mappings -> ``MappingProxyType``, lists -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


class ConfigSnapshot(Mapping[str, Any]):
    """An immutable set of tables with the version they were loaded as.

    ``version`` counts successful loads in this process; ``digest`` is a hash of the file
    contents, equal across processes that loaded the same files — report both.
    """

    __slots__ = ("_tables", "digest", "version")

    def __init__(self, tables: Mapping[str, Any], version: int, digest: str) -> None:
        self._tables = MappingProxyType(dict(tables))
        self.version = version
        self.digest = digest

    def __getitem__(self, name: str) -> Any:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(f"no config table {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def label(self) -> str:
        """Short human form, e.g. ``3-1a2b3c4d5e6f``."""
        return f"{self.version}-{self.digest[:12]}"

    def __repr__(self) -> str:
        return f"<ConfigSnapshot {self.label} tables={sorted(self._tables)}>"


def _read_files(directory: Path) -> tuple[list[tuple[Path, bytes]], str]:
    """Read every table file's bytes; return them with the digest of names and contents."""
    digest = hashlib.sha256()
    files = []
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix in TABLE_SUFFIXES)
        for path in paths:
            raw = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + raw + b"\0")
            files.append((path, raw))
    except OSError as e:
        raise ConfigError([TableProblem(str(directory), "", f"cannot read: {e}")]) from e
    return files, digest.hexdigest()


def _parse_tables(
    files: Sequence[tuple[Path, bytes]], validators: Mapping[str, Validator]
) -> dict[str, Any]:
    """Parse, freeze and validate table files; raise ConfigError listing all problems."""
    problems: list[TableProblem] = []
    tables: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path, raw in files:
        name = path.stem
        if name in sources:
            problems.append(
                TableProblem(path.name, "", f"table {name!r} also defined by {sources[name]}")
            )
            continue
        sources[name] = path.name
        try:
            data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
        except ValueError as e:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
            problems.append(TableProblem(path.name, "", f"cannot parse: {e}"))
            continue
        tables[name] = freeze(data)
    for name, validator in validators.items():
        if name not in tables:
            if name not in sources:
                problems.append(TableProblem(f"{name}.toml", "", "required table is missing"))
            continue
        try:
            for key, message in validator(tables[name]):
                problems.append(TableProblem(sources[name], key, message))
        except Exception as e:
            problems.append(TableProblem(sources[name], "", f"validator failed: {e!r}"))
    if problems:
        raise ConfigError(problems)
    return tables


class ShareData:
    """The process's config tables: one current ``ConfigSnapshot``, swapped whole.

    ``validators`` maps table names to checks (see ``rltwist.game.tables.VALIDATORS``);
    a table with a validator is required.  The constructor loads the directory and raises
    ``ConfigError`` if it is bad — a process must not start on broken config.
    """

    def __init__(
        self, directory: str | Path, validators: Mapping[str, Validator] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.validators: Mapping[str, Validator] = dict(validators or {})
        files, digest = _read_files(self.directory)
        self._snapshot = ConfigSnapshot(_parse_tables(files, self.validators), 1, digest)
        self._last_failure: str | None = None
        log.info(
            "config tables loaded from {directory}: {label}",
            directory=str(self.directory),
            label=self._snapshot.label,
        )

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The current tables; take it once per request and read everything from it."""
        return self._snapshot

    @property
    def version(self) -> int:
        """Number of the current snapshot (1 at start, +1 per reload that changed data)."""
        return self._snapshot.version

    def table(self, name: str) -> Any:
        """Shortcut for ``snapshot[name]`` (fine for a single lookup)."""
        return self._snapshot[name]

    def reload(self) -> ConfigSnapshot:
        """Reload every table and swap them in at once; return the current snapshot.

        If the files did not change the current snapshot is returned as is (same
        version).  On a bad file ``ConfigError`` is raised and the old snapshot stays.
        """
        old = self._snapshot
        try:
            files, digest = _read_files(self.directory)
            if digest == old.digest:
                return old
            tables = _parse_tables(files, self.validators)
        except ConfigError as e:
            log.error("config reload failed, keeping {label}: {error}",
                      label=old.label, error=e)
            raise
        self._snapshot = ConfigSnapshot(tables, old.version + 1, digest)
        log.info("config tables reloaded: {old} -> {new}", old=old.label,
                 new=self._snapshot.label)
        return self._snapshot

    def poll(self) -> list[ConfigSnapshot | ConfigError]:
        """Reload if the files changed: ``[new snapshot]``, ``[error]`` or ``[]``.

        A failure is reported once per content, not on every poll.
        """
        old = self._snapshot
        try:
            new = self.reload()
        except ConfigError as e:
            if str(e) == self._last_failure:
                return []
            self._last_failure = str(e)
            return [e]
        self._last_failure = None
        return [] if new is old else [new]


_SHARED: dict[Path, ShareData] = {}


def shared(
    directory: str | Path, validators: Mapping[str, Validator] | None = None
) -> ShareData:
    """Return this process's ``ShareData`` for ``directory``, loading it on first use.

    Every service of a node calls this with the same directory and gets the same object,
    so tables are parsed and held once per process.
    """
    key = Path(directory).resolve()
    sd = _SHARED.get(key)
    if sd is None:
        sd = _SHARED[key] = ShareData(key, validators)
    return sd


def sharedata_poller(
    sd: ShareData,
    interval: float = 10.0,
    clock: IReactorTime | None = None,
    on_results: Callable[[Sequence[ConfigSnapshot | ConfigError]], Any] | None = None,
) -> PollingService[ConfigSnapshot | ConfigError]:
    """A service reloading ``sd`` every ``interval`` seconds when its files changed."""
    return PollingService(
        sd.poll, interval, clock=clock, on_results=on_results, name="sharedatad"
    )
