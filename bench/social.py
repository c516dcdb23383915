"""Benchmark of chat across regions and role nodes (issue 12), against real nodes.

    python bench/social.py [--quick] [--bots N] [--world-rate R] [--world-seconds S]
                           [--private-rate R] [--private-seconds S] [--json PATH]

Everything runs on this machine: a private redis-server and master, logiccenter, map1,
rolecity1, map2, rolecity2, role1, role2 and login1 as twistd processes
(``rltwist.launcher.LocalCluster``). The players are clients inside this process (one
TCP connection each, the real client protocol), so a message's send and its arrival are
timed on one clock. The chat table is the repository's but for the rate limit, raised so
one player can send 500 messages/s, and ``[client] max_inflight`` is raised so that player
may have more than 16 messages waiting for their answer (open loop: a pause anywhere shows
as latency, not as a closed connection).

Rows, in order:

* ``private``: a player of region 1 sends private messages to a player of region 2 on the
  other role node at ``--private-rate`` (500/s) for ``--private-seconds``; client-to-client
  latency (send written .. ChatNotify read) p50/p99. Path: role → the recipient's
  rolecity → the recipient's role node → client, and the sender's rolecity keeps a copy.
* ``world``: ``--bots`` (2,000; 200 with --quick) players online over role1 and role2 in
  regions 1 and 2; world messages at ``--world-rate`` (20/s) from rotating senders for
  ``--world-seconds``. Delivered ratio (ChatNotify read / messages x online players),
  delivery latency p50/p99, and CPU µs per delivery of each node (user + system from
  /proc through psutil, over the window from the first send to the last delivery):
  role nodes per delivery they wrote, logiccenter per delivery in all.
* ``floor``: one bare-Twisted process writes the same ChatNotify frames to the same number
  of sockets (read by this process the same way), same rate and count: the fan-out with
  nothing around it. ``floor_ratio`` = the floor's CPU per delivery / ours (logiccenter +
  both role nodes) per delivery: 1.0 would be as cheap as the bare floor.

JSON top-level keys: ``private_p50_ms``, ``private_p99_ms``, ``world_delivered_ratio``,
``world_p99_ms``, ``floor_ratio``, plus the rows and the machine. Other work on a shared
machine moves latencies; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.launcher import LocalCluster, free_ports
from rltwist.protocols import REGISTRY, ClientProtocol, pb
from rltwist.redis import OnlineState, RedisClient, RedisServer
from rltwist.sdk import dev_token

REPO = Path(__file__).resolve().parents[1]
NODES = ("master", "logiccenter", "map1", "rolecity1", "map2", "rolecity2",
         "role1", "role2", "login1")
ROLES = ("role1", "role2")
SDK_SECRET = "bench-dev-sdk-secret"
PREFIX = "bs:"
C = pb.ChatChannel
E = pb.ErrorCode
_len = struct.Struct(">I")


def say(text: str) -> None:
    print(text, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


def cpu_of(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# -- clients ------------------------------------------------------------------------------


class Sink:
    """Where every ChatNotify read by this process lands: arrival time per message tag."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {}
        self.by_role: dict[str, int] = {}

    def expect(self, kind: str) -> None:
        self.latencies[kind] = []

    def arrived(self, text: str, role: str) -> None:
        now = time.perf_counter()
        tag = text.split(" ", 1)[0]
        sent = self.sent.get(tag)
        if sent is None:
            return
        kind = tag.split(":", 1)[0]
        found = self.latencies.get(kind)
        if found is not None:
            found.append(now - sent)
            self.by_role[role] = self.by_role.get(role, 0) + 1


class Player:
    """One game client: Login on login1, Auth on the role node it is sent to."""

    def __init__(self, openid: str, region: int, sink: Sink) -> None:
        self.openid = openid
        self.region = region
        self.sink = sink
        self.userid = 0
        self.role = ""
        self.conn: ClientProtocol | None = None

    def push(self, message: Any) -> None:
        if isinstance(message, pb.ChatNotify):
            self.sink.arrived(message.message.text, self.role)

    async def play(self, reactor: Any, login: tuple[str, int], roles: dict[int, str]) -> None:
        conn = ClientProtocol(timeout=30)
        await connectProtocol(TCP4ClientEndpoint(reactor, *login, timeout=10), conn)
        try:
            r = await conn.request(pb.Login(
                openid=self.openid, token=dev_token(SDK_SECRET, self.openid), device_id="b",
                os="bench", server_id=self.region, version="1"))
        finally:
            conn.transport.loseConnection()
        if r.code != E.OK:
            raise RuntimeError(f"{self.openid}: Login answered {E.Name(r.code)}")
        self.userid, self.role = r.userid, roles[r.port]
        self.conn = ClientProtocol(timeout=30, on_push=self.push)
        await connectProtocol(TCP4ClientEndpoint(reactor, r.host, r.port, timeout=10),
                              self.conn)
        a = await self.conn.request(pb.Auth(userid=r.userid, secret=r.secret))
        if a.code != E.OK:
            raise RuntimeError(f"{self.openid}: Auth answered {E.Name(a.code)}")

    def send(self, message: Any) -> defer.Deferred[Any]:
        assert self.conn is not None
        return self.conn.request(message)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.loseConnection()


async def log_in(reactor: Any, players: list[Player], login: tuple[str, int],
                 roles: dict[int, str], concurrency: int) -> None:
    queue = list(reversed(players))
    failures: list[str] = []

    async def worker() -> None:
        while queue and not failures:
            p = queue.pop()
            try:
                await p.play(reactor, login, roles)
            except Exception as e:
                failures.append(f"{p.openid}: {e!r}")

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker())
                               for _ in range(concurrency)])
    if failures:
        raise RuntimeError(f"{len(failures)} players failed to log in; first: {failures[0]}")


async def paced(reactor: Any, rate: float, seconds: float, fire: Any) -> int:
    """Call ``fire(i)`` *rate* times a second for *seconds* (catching up every 5 ms)."""
    start = time.perf_counter()
    total = int(rate * seconds)
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            fire(sent)
            sent += 1
        await task.deferLater(reactor, 0.005)
    return sent


async def wait_until(reactor: Any, check: Any, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            return False
        await task.deferLater(reactor, 0.02)
    return True


# -- the floor ----------------------------------------------------------------------------


class FloorServer(protocol.Protocol):
    """Every connection but the control one is a receiver; a control frame (u32 length
    + bytes) is written as it is to every receiver."""

    def connectionMade(self) -> None:
        self.factory.receivers.append(self)  # type: ignore[attr-defined]
        self.buf = b""

    def connectionLost(self, reason: Any = None) -> None:
        receivers = self.factory.receivers  # type: ignore[attr-defined]
        if self in receivers:
            receivers.remove(self)

    def dataReceived(self, data: bytes) -> None:
        receivers = self.factory.receivers  # type: ignore[attr-defined]
        if self in receivers:  # the first bytes of the control connection
            receivers.remove(self)
        buf = self.buf + data
        while len(buf) >= 4:
            (size,) = _len.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            frame, buf = buf[4:4 + size], buf[4 + size:]
            for r in receivers:
                r.transport.write(frame)
        self.buf = buf


def floor_serve(port: int) -> None:
    from twisted.internet import reactor

    f = protocol.Factory.forProtocol(FloorServer)
    f.receivers = []  # type: ignore[attr-defined]
    reactor.listenTCP(port, f, interface="127.0.0.1", backlog=4096)  # type: ignore[attr-defined]
    print(f"floor ready on 127.0.0.1:{port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


class Ready(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.out = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if b"floor ready" in self.out and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"floor exited: {self.out[-500:]!r}"))


# -- rows ---------------------------------------------------------------------------------


async def private_row(reactor: Any, a: Player, b: Player, sink: Sink, rate: float,
                      seconds: float) -> dict[str, Any]:
    sink.expect("p")
    codes: dict[int, int] = {}
    answers: list[defer.Deferred[Any]] = []

    def fire(i: int) -> None:
        tag = f"p:{i}"
        sink.sent[tag] = time.perf_counter()
        d = a.send(pb.ChatSend(channel=C.CHAT_PRIVATE, to_userid=b.userid,
                               text=f"{tag} private benchmark message"))
        d.addCallback(lambda r: codes.__setitem__(r.code, codes.get(r.code, 0) + 1))
        answers.append(d)

    sent = await paced(reactor, rate, seconds, fire)
    await defer.gatherResults(answers)
    await wait_until(reactor, lambda: len(sink.latencies["p"]) >= codes.get(E.OK, 0), 10)
    lat = sink.latencies["p"]
    return {"row": "private", "sent": sent, "ok": codes.get(E.OK, 0),
            "refused": {E.Name(c): n for c, n in codes.items() if c != E.OK},
            "delivered": len(lat), "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)),
            "max_ms": ms(max(lat) if lat else None), "rate": rate, "seconds": seconds,
            "from": f"{a.role}/region {a.region}", "to": f"{b.role}/region {b.region}"}


async def world_row(reactor: Any, players: list[Player], sink: Sink, rate: float,
                    seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    sink.expect("w")
    sink.by_role = {}
    codes: dict[int, int] = {}
    answers: list[defer.Deferred[Any]] = []
    before = {n: cpu_of(pid) for n, pid in pids.items()}
    me_before = cpu_of(os.getpid())
    started = time.perf_counter()

    def fire(i: int) -> None:
        tag = f"w:{i}"
        sink.sent[tag] = time.perf_counter()
        d = players[i % len(players)].send(pb.ChatSend(channel=C.CHAT_WORLD,
                                                       text=f"{tag} world benchmark message"))
        d.addCallback(lambda r: codes.__setitem__(r.code, codes.get(r.code, 0) + 1))
        answers.append(d)

    sent = await paced(reactor, rate, seconds, fire)
    await defer.gatherResults(answers)
    ok = codes.get(E.OK, 0)
    expected = ok * len(players)
    complete = await wait_until(reactor, lambda: len(sink.latencies["w"]) >= expected, 20)
    window = time.perf_counter() - started
    after = {n: cpu_of(pid) for n, pid in pids.items()}
    me = cpu_of(os.getpid()) - me_before
    lat = sink.latencies["w"]
    delivered = len(lat)
    cpu_us: dict[str, float | None] = {}
    for name in pids:
        spent = after[name] - before[name]
        per = sink.by_role.get(name, 0) if name in ROLES else delivered
        cpu_us[name] = round(spent / per * 1e6, 2) if per else None
    ours = sum(after[n] - before[n] for n in pids)
    return {"row": "world", "players": len(players), "sent": sent, "ok": ok,
            "refused": {E.Name(c): n for c, n in codes.items() if c != E.OK},
            "expected": expected, "delivered": delivered, "complete": complete,
            "delivered_ratio": round(delivered / expected, 6) if expected else 0.0,
            "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)),
            "max_ms": ms(max(lat) if lat else None), "window_s": round(window, 2),
            "deliveries_by_role": dict(sink.by_role),
            "cpu_us_per_delivery": cpu_us,
            "cpu_us_per_delivery_all": round(ours / delivered * 1e6, 2) if delivered else None,
            "receiver_cpu_us_per_delivery": round(me / delivered * 1e6, 2) if delivered else None,
            "rate": rate, "seconds": seconds}


async def floor_row(reactor: Any, workdir: Path, receivers: int, rate: float,
                    seconds: float, frame_body: bytes) -> dict[str, Any]:
    port = free_ports(1)[0]
    ready = Ready()
    proc = reactor.spawnProcess(ready, sys.executable,
                                [sys.executable, os.path.abspath(__file__), "--floor-serve",
                                 str(port)], env=os.environ.copy(), path=str(workdir))
    try:
        await ready.ready
        sink = Sink()
        sink.expect("f")
        conns = []
        for i in range(receivers):
            p = Player(f"floor{i}", 0, sink)
            p.role = "floor"
            p.conn = ClientProtocol(timeout=30, on_push=p.push)
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10),
                                  p.conn)
            conns.append(p)
        control = protocol.Protocol()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10),
                              control)
        control.transport.write(b"")  # nothing yet; the first frame marks it as control
        await task.deferLater(reactor, 0.2)
        msgid = REGISTRY.push_ids[pb.ChatNotify]
        before = cpu_of(proc.pid)

        def fire(i: int) -> None:
            tag = f"f:{i}"
            note = pb.ChatNotify()
            note.ParseFromString(frame_body)
            note.message.text = f"{tag} world benchmark message"
            body = note.SerializeToString()
            frame = pushed_frame(msgid, body)
            sink.sent[tag] = time.perf_counter()
            control.transport.write(_len.pack(len(frame)) + frame)

        sent = await paced(reactor, rate, seconds, fire)
        expected = sent * receivers
        complete = await wait_until(reactor, lambda: len(sink.latencies["f"]) >= expected, 20)
        spent = cpu_of(proc.pid) - before
        lat = sink.latencies["f"]
        for p in conns:
            p.close()
        control.transport.loseConnection()
        return {"row": "floor", "players": receivers, "sent": sent, "expected": expected,
                "delivered": len(lat), "complete": complete,
                "delivered_ratio": round(len(lat) / expected, 6) if expected else 0.0,
                "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)),
                "max_ms": ms(max(lat) if lat else None),
                "cpu_us_per_delivery": round(spent / len(lat) * 1e6, 2) if lat else None}
    finally:
        proc.signalProcess("KILL")


def pushed_frame(msgid: int, body: bytes) -> bytes:
    """A downstream push frame exactly as a gateway writes it."""
    from rltwist.protocols.framing import DOWN_HEADER, MIN_LENGTH

    return DOWN_HEADER.pack(MIN_LENGTH + len(body), msgid, 0) + body


# -- main ---------------------------------------------------------------------------------


def bench_root(workdir: Path) -> Path:
    """A root whose chat table lets one player send 500 messages/s."""
    root = workdir / "root"
    shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
    table = root / "etc" / "game" / "chat.toml"
    text = table.read_text()
    text = text.replace("rate = 1.0", "rate = 1000.0").replace("burst = 5", "burst = 1000")
    table.write_text(text)
    (root / "hotfix" / "codefix").mkdir(parents=True)
    (root / "hotfix" / "datafix").mkdir(parents=True)
    return root


async def main(reactor: Any, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rl-social-bench-", dir=args.dir))
    say(f"machine: {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; work directory {workdir}")
    redis = RedisServer(directory=workdir / "redis")
    await redis.start()
    overrides: dict[str, dict[str, Any]] = {
        "cluster": {"heartbeat_interval": 1.0, "heartbeat_misses": 3},
        "redis": {"url": redis.url, "prefix": PREFIX},
        "login": {"dev_sdk_secret": SDK_SECRET},
        "hotreload": {"root": str(bench_root(workdir)), "config_interval": 0},
        # one client sending 500 requests/s open-loop: a pause of 32 ms anywhere on the
        # path would pass the default 16 requests waiting per connection (which closes it)
        "client": {"max_inflight": 4096},
    }
    lc = LocalCluster(workdir / "run", list(NODES), overrides=overrides)
    players: list[Player] = []
    status = 1
    try:
        say(f"starting {', '.join(NODES)}")
        await lc.start(*NODES)
        await lc.wait_up(NODES)
        client = RedisClient(redis.url, prefix=PREFIX)
        await client.connect()
        state = OnlineState(client)
        if not await wait_until_async(reactor, state, 30):
            raise RuntimeError("master did not set is_available with role1 and role2 "
                               "registered within 30s")
        await client.disconnect()
        login = (lc.node_config("login1")["host"], lc.node_config("login1")["client_port"])
        roles = {lc.node_config(n)["client_port"]: n for n in ROLES}
        sink = Sink()
        players = [Player(f"s{os.getpid()}x{i}", 1 + i % 2, sink) for i in range(args.bots)]
        t0 = time.perf_counter()
        await log_in(reactor, players, login, roles, args.concurrency)
        on = {r: sum(1 for p in players if p.role == r) for r in ROLES}
        say(f"{len(players)} players online in {time.perf_counter() - t0:.1f}s: {on}")
        a = next(p for p in players if p.region == 1)
        b = next((p for p in players if p.region == 2 and p.role != a.role), None)
        if b is None:
            raise RuntimeError("no region-2 player on the other role node")

        # warm-up: every path once (loads the channel and pair entities)
        await private_row(reactor, a, b, sink, 50, 0.2)
        await world_row(reactor, players, sink, 5, 0.2, {})
        private = await private_row(reactor, a, b, sink, args.private_rate,
                                    args.private_seconds)
        pids = {n: lc.nodes[n].pid for n in ("logiccenter", *ROLES)}
        world = await world_row(reactor, players, sink, args.world_rate, args.world_seconds,
                                pids)  # type: ignore[arg-type]
        sample = pb.ChatNotify(message=pb.ChatMessage(
            channel=C.CHAT_WORLD, from_userid=a.userid, from_name="", from_region=1,
            text="w:0 world benchmark message", time_ms=int(time.time() * 1000)))
        for p in players:  # the floor's receivers are this process too: one load at a time
            p.close()
        floor = await floor_row(reactor, workdir, len(players), args.world_rate,
                                args.world_seconds, sample.SerializeToString())
        ours = world["cpu_us_per_delivery_all"]
        ratio = (round(floor["cpu_us_per_delivery"] / ours, 3)
                 if ours and floor["cpu_us_per_delivery"] else None)
        result = {
            "private_p50_ms": private["p50_ms"], "private_p99_ms": private["p99_ms"],
            "world_delivered_ratio": world["delivered_ratio"], "world_p99_ms": world["p99_ms"],
            "floor_ratio": ratio, "rows": [private, world, floor], "quick": args.quick,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg": [round(x, 2) for x in os.getloadavg()]}}
        print_table(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            say(f"wrote {args.json}")
        status = 0 if world["complete"] and private["delivered"] == private["ok"] else 1
        if status:
            say("FAILED: not every accepted message was delivered within the bound")
    finally:
        for p in players:
            p.close()
        await lc.stop_all()
        await redis.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


async def wait_until_async(reactor: Any, state: OnlineState, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await state.get_available() and \
                {r.node for r in await state.list_roles()} >= set(ROLES):
            return True
        await task.deferLater(reactor, 0.1)
    return False


def print_table(result: dict[str, Any]) -> None:
    private, world, floor = result["rows"]
    say("")
    say(f"{'row':<8} {'players':>7} {'msgs':>6} {'delivered':>10} {'ratio':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  CPU µs/delivery")
    say(f"{'private':<8} {2:>7} {private['ok']:>6} {private['delivered']:>10} "
        f"{fmt(private['delivered'] / private['ok'] if private['ok'] else None):>8} "
        f"{fmt(private['p50_ms']):>8} {fmt(private['p99_ms']):>8} {fmt(private['max_ms']):>8}"
        f"  ({private['rate']:g}/s, {private['from']} -> {private['to']})")
    cpu = ", ".join(f"{n} {fmt(v)}" for n, v in world["cpu_us_per_delivery"].items())
    say(f"{'world':<8} {world['players']:>7} {world['ok']:>6} {world['delivered']:>10} "
        f"{fmt(world['delivered_ratio']):>8} {fmt(world['p50_ms']):>8} "
        f"{fmt(world['p99_ms']):>8} {fmt(world['max_ms']):>8}  {cpu}; all "
        f"{fmt(world['cpu_us_per_delivery_all'])}; receiver "
        f"{fmt(world['receiver_cpu_us_per_delivery'])}")
    say(f"{'floor':<8} {floor['players']:>7} {floor['sent']:>6} {floor['delivered']:>10} "
        f"{fmt(floor['delivered_ratio']):>8} {fmt(floor['p50_ms']):>8} "
        f"{fmt(floor['p99_ms']):>8} {fmt(floor['max_ms']):>8}  "
        f"{fmt(floor['cpu_us_per_delivery'])} (one bare Twisted process)")
    say(f"floor_ratio (floor CPU per delivery / ours) {fmt(result['floor_ratio'])}; "
        f"load average {' '.join(str(x) for x in result['machine']['loadavg'])}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: 200 players, 3 s of world chat, 2 s of private")
    p.add_argument("--bots", type=int, default=2000, help="players online (default 2000)")
    p.add_argument("--concurrency", type=int, default=50, help="logins at once")
    p.add_argument("--world-rate", type=float, default=20.0, help="world messages/s")
    p.add_argument("--world-seconds", type=float, default=10.0)
    p.add_argument("--private-rate", type=float, default=500.0, help="private messages/s")
    p.add_argument("--private-seconds", type=float, default=10.0)
    p.add_argument("--dir", help="parent directory of the work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument("--floor-serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        given = " ".join(argv)
        if "--bots" not in given:
            args.bots = 200
        if "--world-seconds" not in given:
            args.world_seconds = 3.0
        if "--private-seconds" not in given:
            args.private_seconds = 2.0
    if args.bots < 20 and args.floor_serve is None:
        p.error("--bots must be >= 20 (world senders rotate; each may send 1/s)")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.floor_serve is not None:
        floor_serve(arguments.floor_serve)
    else:
        react_main(lambda reactor: main(reactor, arguments))
