"""Cluster configuration: one TOML file describes the cluster, every node reads it.

A bad file never produces a traceback: every problem found is collected into one
:class:`ConfigError` whose message names the file and the key, so an operator can fix it
from a single line of output.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

DEFAULT_CONFIG = "etc/cluster.toml"
#: where an installed package keeps its copy of etc/cluster.toml and etc/game (setup.py)
PACKAGED = "defaults"

#: node kinds in start order; shutdown runs the slave kinds in the order below.
START_ORDER = ("master", "logiccenter", "map", "guild", "mail", "rolecity", "role", "login")
SHUTDOWN_ORDER = ("role", "rolecity", "mail", "guild", "map", "logiccenter", "master")
#: one node each for the whole cluster
GLOBAL_KINDS = ("master", "logiccenter")
#: one node each per region (``map<sid>`` ...), in start order
REGION_KINDS = ("map", "guild", "mail", "rolecity")
#: pools shared by every region (``role<n>``, ``login<n>``)
POOL_KINDS = ("role", "login")
CLIENT_KINDS = ("role", "login")  # kinds that accept game clients

#: The development defaults shipped in etc/cluster.toml and used by the launcher. A node
#: that listens on a non-loopback address refuses to start with any of them (see
#: ``insecure_defaults``).
DEV_CLUSTER_SECRET = "dev-only-cluster-secret-change-me"
DEV_GM_TOKEN = "dev-only-gm-token-change-me"
DEV_SDK_SECRET = "dev-only-sdk-secret-change-me"

#: the LRU services a config may size with ``[lru.<worker>]``
LRU_WORKERS = ("agent", "mail", "guildhandler")

_NAME_RE = re.compile(r"^([a-z]+?)(\d*)$")
#: a client version: dotted numbers ("1", "1.4", "1.4.0")
_VERSION_RE = re.compile(r"^\d{1,9}(\.\d{1,9}){0,7}$")


def packaged_root() -> Path | None:
    """The directory holding the shipped ``etc/cluster.toml`` and ``etc/game``: inside an
    installed package ``rltwist/defaults``, in a source tree the checkout; None if
    neither has them."""
    import rltwist

    here = Path(rltwist.__file__).resolve().parent
    for candidate in (here / PACKAGED, here.parent):
        if (candidate / DEFAULT_CONFIG).is_file() and (candidate / "etc" / "game").is_dir():
            return candidate
    return None


def default_config_path() -> str:
    """The config used without ``--config``: ``etc/cluster.toml`` under the current
    directory if there is one, else the one shipped with the package (so ``rl-cluster
    up`` and the nodes work outside a checkout)."""
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    root = packaged_root()
    return str(root / DEFAULT_CONFIG) if root is not None else DEFAULT_CONFIG


class ConfigError(Exception):
    """The configuration cannot be used; str() is one line naming file and key."""


def parse_node_name(name: str) -> tuple[str, int | None]:
    """Split ``map12`` into ``("map", 12)``; raise ValueError for an unknown node name."""
    m = _NAME_RE.match(name)
    if not m or m.group(1) not in START_ORDER:
        raise ValueError(f"unknown node name {name!r}")
    kind, digits = m.group(1), m.group(2)
    if kind in GLOBAL_KINDS:
        if digits:
            raise ValueError(f"node {name!r}: {kind} is global and takes no number")
        return kind, None
    if not digits or int(digits) < 1:
        raise ValueError(f"node {name!r}: {kind} nodes are named {kind}<n> with n >= 1")
    return kind, int(digits)


def node_name(kind: str, number: int | None = None) -> str:
    """The node name for a kind and its sid/index (``("map", 2)`` -> ``"map2"``)."""
    return kind if kind in GLOBAL_KINDS else f"{kind}{number}"


def starts_after(name: str, other: str) -> bool:
    """Whether node *name* waits for node *other* to be up before it proceeds.

    Every node waits for the global nodes before its kind (master counts as up once it
    answers). A region node also waits for the earlier kinds of its own region only
    (``guild2`` for ``map2``, never for ``map1``), so one region that is down blocks no
    other. Pool nodes (role, login) wait for the global nodes only: they serve every
    region, and a region that is down must not stop logins to the others.
    """
    kind, number = parse_node_name(name)
    other_kind, other_number = parse_node_name(other)
    if START_ORDER.index(other_kind) >= START_ORDER.index(kind):
        return False
    if other_kind in GLOBAL_KINDS:
        return other_kind != "master"
    return kind in REGION_KINDS and other_kind in REGION_KINDS and number == other_number


@attrs.frozen
class NodeConfig:
    name: str
    kind: str
    number: int | None  # sid for region kinds, index for pool kinds
    host: str
    port: int
    metrics_port: int
    client_port: int | None = None


@attrs.frozen
class ClusterSettings:
    secret: bytes
    call_timeout: float = 30.0
    unreachable_after: float = 10.0
    connect_timeout: float = 3.0
    reconnect_initial: float = 0.05
    reconnect_max: float = 2.0
    timeout_tick: float = 0.1
    max_message: int = 64 * 1024 * 1024
    heartbeat_interval: float = 1.0
    heartbeat_misses: int = 3
    phase_timeout: float = 600.0
    #: a node without a heartbeat answer from master for this long fences itself (role
    #: nodes save and kick their players); shorter absences only stop writes
    fence_after: float = 30.0
    #: a fresh master waits this long for role nodes to re-register before it sets
    #: ``is_available`` (besides every role node named in the config)
    reregister_wait: float = 5.0


@attrs.frozen
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "rl:"
    timeout: float = 5.0


@attrs.frozen
class StorageSettings:
    backend: str = "embedded"
    path: str = "run/data"
    mongo_uri: str = "mongodb://127.0.0.1:27017"
    timeout: float = 5.0
    save_interval: float = 300.0
    #: SQLite ``PRAGMA synchronous`` of the embedded backend: NORMAL survives a process
    #: crash; FULL also survives a power loss (slower commits)
    synchronous: str = "NORMAL"
    #: MongoDB write concern ``w``: "majority" (default) or a number of members as a string
    write_concern: str = "majority"


@attrs.frozen
class LoginSettings:
    handlers: int = 4
    sdk_url: str = ""  # empty: verify dev tokens in-process
    sdk_timeout: float = 5.0
    #: idle HTTP connections to the SDK kept per login node (a burst of logins reuses them)
    sdk_connections: int = 256
    dev_sdk_secret: str = DEV_SDK_SECRET
    lock_ttl: float = 10.0
    secret_ttl: float = 60.0
    #: oldest client version allowed to log in (dotted numbers, e.g. "1.4.0"); older
    #: clients get VERSION_TOO_OLD. Empty: every version
    min_version: str = ""


@attrs.frozen
class RoleSettings:
    agents: int = 8
    heartbeat_timeout: float = 300.0
    logout_wait: float = 300.0


@attrs.frozen
class ClientSettings:
    """Bounds of a node's client port (``[client]``: login nodes and role gateways)."""

    #: a connection that has not completed Login (login node) or Auth (gateway) within
    #: this is closed (s)
    handshake_timeout: float = 30.0
    #: a frame that has begun must be complete within this, or the connection is closed (s)
    frame_timeout: float = 30.0
    #: open client connections per node; more are refused and counted
    max_connections: int = 20_000
    #: open client connections per source address; 0 = no per-address cap (players behind
    #: carrier NAT share addresses)
    max_connections_per_ip: int = 0
    #: requests of one connection waiting for their answer; one more closes it
    max_inflight: int = 16
    #: bytes waiting for a client that does not read; past it the connection is dropped
    max_outbound: int = 1024 * 1024


@attrs.frozen
class MasterSettings:
    gm_host: str = "127.0.0.1"
    gm_port: int = 8080
    gm_token: str = ""


@attrs.frozen
class HotReloadSettings:
    """``[hotreload]``: where ``etc/game`` and ``hotfix/`` are and how often they are
    scanned (``rltwist.nodes.common.services`` resolves the root)."""

    #: relative to the config file's directory; "" = search (see services.py)
    root: str = ""
    hotfix_interval: float = 2.0  # 0 = only on GM request
    config_interval: float = 10.0  # 0 = only on GM request


@attrs.frozen
class HotfixSettings:
    """``[hotfix]``: packages besides ``rltwist.game`` that code fix lists may name (the
    hotfix service checks each name when it starts)."""

    game_packages: tuple[str, ...] = ()


@attrs.frozen
class LruSettings:
    """``[lru.<worker>]``: how many workers an LRU service runs and how many entities each
    keeps resident."""

    workers: int
    capacity: int = 1000


@attrs.frozen
class MapSettings:
    """One region's map: ``[map]`` with ``[map.regions.<sid>]`` overrides (docs/world.md
    "Map"). ``seed`` None: the region's seed is ``[map] seed + sid`` (see ``map_for``)."""

    width: int = 512
    height: int = 512
    block: int = 16
    seed: int | None = None


@attrs.frozen
class MapConfig:
    """``[map]``: the default map of every region and the per-region overrides."""

    default: MapSettings = MapSettings()
    regions: Mapping[int, Mapping[str, int]] = attrs.field(factory=dict)

    def map_for(self, sid: int) -> MapSettings:
        """The map of region *sid*: its overrides over the defaults; the seed, unless set
        for the region, is ``[map] seed`` (0 when unset) + sid, so regions differ."""
        over = dict(self.regions.get(sid, {}))
        base = self.default
        seed = over.pop("seed", None)
        if seed is None:
            seed = (base.seed or 0) + sid
        return attrs.evolve(base, seed=seed, **over)


#: ``[map]`` keys: (minimum, maximum) of each
MAP_LIMITS = {"width": (16, 65535), "height": (16, 65535), "block": (4, 256),
              "seed": (0, 2**63 - 1)}

#: ``[lru.<worker>]`` defaults: rolecity's agents, mail, guild handlers
LRU_DEFAULTS = {"agent": LruSettings(8), "mail": LruSettings(4), "guildhandler": LruSettings(2)}


@attrs.frozen
class Config:
    path: str
    cluster: ClusterSettings
    redis: RedisSettings
    storage: StorageSettings
    master: MasterSettings
    nodes: Mapping[str, NodeConfig]
    login: LoginSettings = LoginSettings()
    role: RoleSettings = RoleSettings()
    client: ClientSettings = ClientSettings()
    hotreload: HotReloadSettings = HotReloadSettings()
    hotfix: HotfixSettings = HotfixSettings()
    lru: Mapping[str, LruSettings] = attrs.field(factory=lambda: dict(LRU_DEFAULTS))
    map: MapConfig = MapConfig()
    raw: Mapping[str, Any] = attrs.field(repr=False, factory=dict)

    def node(self, name: str) -> NodeConfig:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no [nodes.{name}] section (known nodes: "
                f"{', '.join(sorted(self.nodes)) or 'none'})"
            ) from None


def is_loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or ``localhost``; any other name
    counts as reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_defaults(config: Config, name: str) -> tuple[list[str], list[str]]:
    """``(keys, hosts)``: the development defaults node *name* would serve with, and the
    non-loopback addresses it would listen on; no keys when every address is loopback.

    Only the secrets that node uses count: the cluster secret for every node, the GM token
    for master, the dev SDK secret for a login node that checks tokens itself (no
    ``login.sdk_url``).
    """
    me = config.node(name)
    hosts = [me.host] + ([config.master.gm_host] if me.kind == "master" else [])
    exposed = sorted({h for h in hosts if not is_loopback(h)})
    if not exposed:
        return [], []
    keys = []
    if config.cluster.secret == DEV_CLUSTER_SECRET.encode():
        keys.append("cluster.secret")
    if me.kind == "master" and config.master.gm_token == DEV_GM_TOKEN:
        keys.append("master.gm_token")
    if me.kind == "login" and not config.login.sdk_url \
            and config.login.dev_sdk_secret == DEV_SDK_SECRET:
        keys.append("login.dev_sdk_secret")
    return keys, exposed


class _Reader:
    """Reads typed values out of a TOML table, collecting every error with its key.

    It remembers which keys of each table it read: whatever is left over is a typo or a
    setting this version does not have, and ``unknown_keys`` reports it (a silently
    ignored ``heartbeat_intreval`` would leave the default in force unnoticed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self._tables: list[tuple[str, Mapping[str, Any]]] = []
        self._read: dict[int, set[str]] = {}

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def table(self, data: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
        name = key.rsplit(".", 1)[-1]
        self._read.setdefault(id(data), set()).add(name)
        value = data.get(name)
        if value is None:
            if required:
                self.error(key, "missing section")
            return {}
        if not isinstance(value, dict):
            self.error(key, "must be a table")
            return {}
        self.track(key, value)
        return value

    def track(self, key: str, table: Mapping[str, Any]) -> None:
        """Report the keys of *table* that are never read (``unknown_keys``)."""
        self._tables.append((key, table))
        self._read.setdefault(id(table), set())

    def mark_read(self, table: Mapping[str, Any]) -> None:
        """Every key of *table* is accounted for (its sub-tables are read one by one)."""
        self._read.setdefault(id(table), set()).update(table)

    def unknown_keys(self) -> None:
        for prefix, table in self._tables:
            read = self._read.get(id(table), set())
            for key in sorted(set(table) - read):
                if prefix:
                    self.error(f"{prefix}.{key}", "unknown key" + _did_you_mean(key, read))
                else:
                    self.error(key, "unknown section" + _did_you_mean(key, read))

    def value(self, data: Mapping[str, Any], prefix: str, key: str, kind: type | tuple[type, ...],
              default: Any = attrs.NOTHING, check: Any = None, why: str = "") -> Any:
        self._read.setdefault(id(data), set()).add(key)
        full = f"{prefix}.{key}"
        if key not in data:
            if default is attrs.NOTHING:
                self.error(full, "missing")
                return None
            return default
        v = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.error(full, f"must be {names}, got {v!r}")
            return default if default is not attrs.NOTHING else None
        if check is not None and not check(v):
            self.error(full, f"{why}, got {v!r}")
            return default if default is not attrs.NOTHING else None
        return v


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _port(v: int) -> bool:
    return 0 < v < 65536


def _positive(v: float) -> bool:
    return v > 0


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate the cluster config at *path*; raise ConfigError on any problem."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config PATH)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(data, path)


def config_from_dict(data: Mapping[str, Any], path: str = "<config>") -> Config:
    """Validate an already-parsed config mapping (tests build configs this way)."""
    r = _Reader(path)
    r.track("", data)  # a section nothing below reads is unknown
    c = r.table(data, "cluster", required=True)
    secret = r.value(c, "cluster", "secret", str, check=lambda s: len(s) >= 8,
                     why="must be at least 8 characters")
    defaults = {f.name: f.default for f in attrs.fields(ClusterSettings)}
    floats = {
        name: r.value(c, "cluster", name, float, default=defaults[name], check=_positive,
                      why="must be > 0")
        for name in ("call_timeout", "unreachable_after", "connect_timeout", "reconnect_initial",
                     "reconnect_max", "timeout_tick", "heartbeat_interval", "phase_timeout",
                     "fence_after", "reregister_wait")
    }
    misses = r.value(c, "cluster", "heartbeat_misses", int, default=3, check=lambda v: v >= 1,
                     why="must be >= 1")
    max_message = r.value(c, "cluster", "max_message", int, default=64 * 1024 * 1024,
                          check=lambda v: v >= 1024 * 1024, why="must be at least 1048576")
    cluster = ClusterSettings(secret=(secret or "").encode(), heartbeat_misses=misses or 3,
                              max_message=max_message or 64 * 1024 * 1024, **floats)

    rd = r.table(data, "redis")
    redis = RedisSettings(
        url=r.value(rd, "redis", "url", str, default="redis://127.0.0.1:6379/0",
                    check=lambda u: u.startswith("redis://"), why="must start with redis://"),
        prefix=r.value(rd, "redis", "prefix", str, default="rl:"),
        timeout=r.value(rd, "redis", "timeout", float, default=5.0, check=_positive,
                        why="must be > 0"),
    )
    st = r.table(data, "storage")
    storage = StorageSettings(
        backend=r.value(st, "storage", "backend", str, default="embedded",
                        check=lambda b: b in ("embedded", "mongodb"),
                        why='must be "embedded" or "mongodb"'),
        path=r.value(st, "storage", "path", str, default="run/data"),
        mongo_uri=r.value(st, "storage", "mongo_uri", str, default="mongodb://127.0.0.1:27017"),
        timeout=r.value(st, "storage", "timeout", float, default=5.0, check=_positive,
                        why="must be > 0"),
        save_interval=r.value(st, "storage", "save_interval", float, default=300.0,
                              check=_positive, why="must be > 0"),
        synchronous=r.value(st, "storage", "synchronous", str, default="NORMAL",
                            check=lambda v: v.upper() in ("OFF", "NORMAL", "FULL", "EXTRA"),
                            why='must be "OFF", "NORMAL", "FULL" or "EXTRA"').upper(),
        write_concern=r.value(st, "storage", "write_concern", str, default="majority",
                              check=lambda v: v == "majority" or (v.isdigit() and int(v) >= 1),
                              why='must be "majority" or a number of members >= 1 as a string'),
    )
    m = r.table(data, "master")
    master = MasterSettings(
        gm_host=r.value(m, "master", "gm_host", str, default="127.0.0.1"),
        gm_port=r.value(m, "master", "gm_port", int, default=8080, check=_port,
                        why="must be a port 1-65535"),
        gm_token=r.value(m, "master", "gm_token", str, check=lambda t: len(t) >= 8,
                         why="must be at least 8 characters") or "",
    )

    lg = r.table(data, "login")
    login = LoginSettings(
        handlers=r.value(lg, "login", "handlers", int, default=4, check=lambda v: 1 <= v <= 256,
                         why="must be 1-256"),
        sdk_url=r.value(lg, "login", "sdk_url", str, default="",
                        check=lambda u: u == "" or u.startswith(("http://", "https://")),
                        why='must be "" or an http(s) URL'),
        sdk_timeout=r.value(lg, "login", "sdk_timeout", float, default=5.0, check=_positive,
                            why="must be > 0"),
        sdk_connections=r.value(lg, "login", "sdk_connections", int, default=256,
                                check=lambda v: 1 <= v <= 10_000, why="must be 1-10000"),
        dev_sdk_secret=r.value(lg, "login", "dev_sdk_secret", str, default=DEV_SDK_SECRET),
        lock_ttl=r.value(lg, "login", "lock_ttl", float, default=10.0, check=_positive,
                         why="must be > 0"),
        secret_ttl=r.value(lg, "login", "secret_ttl", float, default=60.0, check=_positive,
                           why="must be > 0"),
        min_version=r.value(lg, "login", "min_version", str, default="",
                            check=lambda v: v == "" or _VERSION_RE.match(v) is not None,
                            why='must be "" or dotted numbers such as "1.4.0"'),
    )
    ro = r.table(data, "role")
    role = RoleSettings(
        agents=r.value(ro, "role", "agents", int, default=8, check=lambda v: 1 <= v <= 1024,
                       why="must be 1-1024"),
        heartbeat_timeout=r.value(ro, "role", "heartbeat_timeout", float, default=300.0,
                                  check=_positive, why="must be > 0"),
        logout_wait=r.value(ro, "role", "logout_wait", float, default=300.0, check=_positive,
                            why="must be > 0"),
    )

    cl = r.table(data, "client")
    client = ClientSettings(
        handshake_timeout=r.value(cl, "client", "handshake_timeout", float, default=30.0,
                                  check=_positive, why="must be > 0"),
        frame_timeout=r.value(cl, "client", "frame_timeout", float, default=30.0,
                              check=_positive, why="must be > 0"),
        max_connections=r.value(cl, "client", "max_connections", int, default=20_000,
                                check=lambda v: v >= 1, why="must be >= 1"),
        max_connections_per_ip=r.value(cl, "client", "max_connections_per_ip", int,
                                       default=0, check=lambda v: v >= 0,
                                       why="must be >= 0 (0: no per-address cap)"),
        max_inflight=r.value(cl, "client", "max_inflight", int, default=16,
                             check=lambda v: v >= 1, why="must be >= 1"),
        max_outbound=r.value(cl, "client", "max_outbound", int, default=1024 * 1024,
                             check=lambda v: v >= 65536, why="must be >= 65536"),
    )
    hr = r.table(data, "hotreload")
    hotreload = HotReloadSettings(
        root=r.value(hr, "hotreload", "root", str, default=""),
        hotfix_interval=r.value(hr, "hotreload", "hotfix_interval", float, default=2.0,
                                check=lambda v: v >= 0, why="must be >= 0 (0 = GM only)"),
        config_interval=r.value(hr, "hotreload", "config_interval", float, default=10.0,
                                check=lambda v: v >= 0, why="must be >= 0 (0 = GM only)"),
    )
    hf = r.table(data, "hotfix")
    packages = r.value(hf, "hotfix", "game_packages", list, default=[],
                       check=lambda v: all(isinstance(p, str) and p for p in v),
                       why="must be a list of package names")
    hotfix = HotfixSettings(game_packages=tuple(packages or ()))
    lru = dict(LRU_DEFAULTS)
    lru_tables = r.table(data, "lru")
    r.mark_read(lru_tables)
    for worker, table in lru_tables.items():
        key = f"lru.{worker}"
        if worker not in LRU_WORKERS:
            r.error(key, f"unknown LRU service (one of {', '.join(LRU_WORKERS)})"
                    + _did_you_mean(worker, set(LRU_WORKERS)))
            continue
        if not isinstance(table, dict):
            r.error(key, "must be a table")
            continue
        r.track(key, table)
        default = LRU_DEFAULTS[worker]
        lru[worker] = LruSettings(
            workers=r.value(table, key, "workers", int, default=default.workers,
                            check=lambda v: 1 <= v <= 1_000_000, why="must be 1-1000000"),
            capacity=r.value(table, key, "capacity", int, default=default.capacity,
                             check=lambda v: 1 <= v <= 1_000_000, why="must be 1-1000000"))

    map_config = _map_config(r, data)

    nodes: dict[str, NodeConfig] = {}
    node_tables = r.table(data, "nodes", required=True)
    r.mark_read(node_tables)
    for name, table in node_tables.items():
        key = f"nodes.{name}"
        try:
            kind, number = parse_node_name(name)
        except ValueError as e:
            r.error(key, str(e))
            continue
        if not isinstance(table, dict):
            r.error(key, "must be a table")
            continue
        r.track(key, table)
        client_port = None
        if kind in CLIENT_KINDS:
            client_port = r.value(table, key, "client_port", int, check=_port,
                                  why="must be a port 1-65535")
        nodes[name] = NodeConfig(
            name=name, kind=kind, number=number,
            host=r.value(table, key, "host", str, default="127.0.0.1"),
            port=r.value(table, key, "port", int, check=_port, why="must be a port 1-65535"),
            metrics_port=r.value(table, key, "metrics_port", int, check=_port,
                                 why="must be a port 1-65535"),
            client_port=client_port,
        )
    if nodes and "master" not in nodes:
        r.error("nodes.master", "missing section (every cluster has a master)")

    # Port clashes: two listeners configured on one host:port can never both start.
    seen: dict[tuple[str, int], str] = {(master.gm_host, master.gm_port): "master.gm_port"}
    for n in nodes.values():
        for attr in ("port", "metrics_port", "client_port"):
            p = getattr(n, attr)
            if p is None:
                continue
            other = seen.setdefault((n.host, p), f"nodes.{n.name}.{attr}")
            if other != f"nodes.{n.name}.{attr}":
                r.error(f"nodes.{n.name}.{attr}", f"port {p} clashes with {other}")
    r.unknown_keys()
    if r.errors:
        raise ConfigError(f"{path}: " + "; ".join(r.errors))
    return Config(path=path, cluster=cluster, redis=redis, storage=storage, master=master,
                  nodes=nodes, login=login, role=role, client=client, hotreload=hotreload,
                  hotfix=hotfix, lru=lru, map=map_config, raw=data)


def _map_keys(r: _Reader, table: Mapping[str, Any], prefix: str) -> dict[str, int]:
    """The ``[map]`` keys set in *table*, each checked against MAP_LIMITS."""
    found: dict[str, int] = {}
    for key, (low, high) in MAP_LIMITS.items():
        value = r.value(table, prefix, key, int, default=None,
                        check=lambda v, lo=low, hi=high: lo <= v <= hi,
                        why=f"must be {low}..{high}")
        if value is not None:
            found[key] = value
    return found


def _map_config(r: _Reader, data: Mapping[str, Any]) -> MapConfig:
    """``[map]`` and its ``[map.regions.<sid>]`` overrides (docs/world.md "Map")."""
    section = r.table(data, "map")
    default = MapSettings(**_map_keys(r, section, "map"))
    regions: dict[int, Mapping[str, int]] = {}
    region_tables = r.table(section, "map.regions") if section else {}
    r.mark_read(region_tables)
    for sid, table in region_tables.items():
        key = f"map.regions.{sid}"
        if not (isinstance(sid, str) and sid.isdigit() and int(sid) >= 1):
            r.error(key, "regions are numbered from 1 ([map.regions.<sid>])")
            continue
        if not isinstance(table, dict):
            r.error(key, "must be a table")
            continue
        r.track(key, table)
        regions[int(sid)] = _map_keys(r, table, key)
    return MapConfig(default, regions)
