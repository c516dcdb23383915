"""``rl-chaos fuzz``: hostile input at every port of a running cluster.

* client ports (login nodes' loginserver, role nodes' gateway): well-framed requests with
  random fields, mutated frames (bit flips, truncation, bad lengths, unknown ids, session
  0, random bytes); on the gateway before Auth (anything but a good Auth must be refused)
  and after it (a fuzz player that logged in properly);
* cluster ports of every node: before the handshake (garbage, forged AUTH, frames that
  pretend to be calls), and after a proper handshake only frames mutated *below the call
  layer* (byte flips, wrong arity, unknown kinds, non-list objects) — every frame is
  decoded before it is written and a frame that would be a valid call of any real handler
  is dropped (never ``slaveflow.shutdown`` or the like); the only calls that can reach a
  handler are ``diag.ping`` and ``diag.echo``;
* master's GM API: random methods, paths, headers and bodies without the token; with the
  token only GET requests.

Connections are reused (a batch of frames per write, a new connection only after the node
closed one), so TIME_WAIT cannot run out of ports. A frame counts when the node provably
handled it: it was answered, or it was the one the node closed the connection on.

Afterwards: every node must still run and be up in master's table, a fresh login must
work, each node's open file descriptors (``/proc/<pid>/fd``) must be back to the baseline
taken before, ``rl_cluster_unauthenticated_dispatches`` must be 0 on every node, no
gateway may have answered OK to an unauthenticated request, and GM must have answered no
5xx.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import re
import secrets
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack
from twisted.internet import defer, protocol, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from rltwist.chaos.bots import Env, connect, login, probe_login
from rltwist.chaos.harness import Harness
from rltwist.chaos.ledger import Ledger
from rltwist.cluster.link import AUTH, CALL, ERROR, HELLO, OK, PING, REPLY, SEND, mac
from rltwist.protocols import pb
from rltwist.protocols.framing import UP_HEADER, FrameDecoder, FrameError
from rltwist.protocols.registry import REGISTRY

E = pb.ErrorCode
FD_SLACK_WAIT = 20.0  # s: how long fds may take to come back to the baseline
SAFE_CALLS = {("diag", "ping"), ("diag", "echo")}


# -- frame makers ----------------------------------------------------------------------------

def rand_text(rng: random.Random, n: int | None = None) -> str:
    n = rng.choice([0, 1, 2, 5, 14, 15, 40, 200]) if n is None else n
    pools = ["abcdefxyz0123456789", "_- ", "éüß中文かなㅎ", "\x00\x01\t\n",
             "\U0001d518\U0001f642", "gmadmin"]
    pool = "".join(rng.sample(pools, rng.randint(1, len(pools))))
    return "".join(rng.choice(pool) for _ in range(n))


def rand_int(rng: random.Random) -> int:
    return rng.choice([0, 1, -1, 7, 65535, 65536, 2**31 - 1, 2**32 - 1, rng.randint(0, 2**16)])


def frame(proto: int, session: int, body: bytes) -> bytes:
    return UP_HEADER.pack(6 + len(body), proto, session) + body


def random_message(rng: random.Random, cls: Any) -> bytes:
    """A well-formed body of *cls* with random field values (unknown fields sometimes)."""
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        try:
            if field.type == field.TYPE_STRING:
                setattr(msg, field.name, rand_text(rng))
            elif field.type == field.TYPE_BYTES:
                setattr(msg, field.name, rng.randbytes(rng.randint(0, 40)))
            elif field.type in (field.TYPE_UINT32, field.TYPE_UINT64, field.TYPE_FIXED32):
                setattr(msg, field.name, abs(rand_int(rng)) % 2**32)
            elif field.type in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_SINT32,
                                field.TYPE_ENUM):
                setattr(msg, field.name, rand_int(rng) % 2**31)
            elif field.type == field.TYPE_BOOL:
                setattr(msg, field.name, rng.random() < 0.5)
        except (ValueError, TypeError, AttributeError):
            continue
    body = msg.SerializeToString()
    if rng.random() < 0.2:  # an unknown field: parsers must skip it
        body += bytes([0x98, 0x3E]) + bytes([rng.randint(0, 127)])
    return body


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, byte inserts/deletes, truncation or duplication of *data*."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b.insert(rng.randint(0, len(b)), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        elif op == 3 and b:
            del b[rng.randint(0, len(b) - 1):]
        elif op == 4:
            b += b[: rng.randint(0, len(b))]
    return bytes(b)


def hostile_client_frame(rng: random.Random, protos: list[int]) -> bytes:
    """A frame (or bytes) a node may close the connection on, or stall on."""
    kind = rng.randrange(7)
    session = rng.randint(1, 2**32 - 1)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 64))
    if kind == 1:  # length below 6, or above the 65535 a u16 can say: small
        return struct.pack(">H", rng.randint(0, 5)) + rng.randbytes(8)
    if kind == 2:
        return frame(rng.choice([0, 2**16 - 1, 299, 300, 9999]), session, b"")
    if kind == 3:
        return frame(rng.choice(protos), 0, b"")
    if kind == 4:  # a body that is not the message (bit flips of a real one)
        cls = REGISTRY.requests[rng.choice(protos)]
        return frame(REGISTRY.id_of(cls), session, mutate(rng, random_message(rng, cls)))
    if kind == 5:  # declared longer than sent: the node waits for the rest
        return struct.pack(">HHI", 200, rng.choice(protos), session) + b"\x0a\x01"
    return mutate(rng, frame(rng.choice(protos), session, b""))


def safe_cluster_bytes(data: bytes) -> bool:
    """*data* decodes to no call or send a real handler would run (besides diag.ping and
    diag.echo): the fuzzer never makes a valid call of a lifecycle method."""
    u = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 20)
    u.feed(data)
    try:
        for obj in u:
            if type(obj) is list and obj and obj[0] in (CALL, SEND):
                names = [x for x in obj[1:4] if isinstance(x, str)]
                if any(not n.startswith("fuzz") for n in names) and not any(
                        pair in SAFE_CALLS for pair in itertools.pairwise(names)):
                    return False
    except Exception:
        return True  # undecodable from here on: the node can only close the link
    return True


def cluster_frame(rng: random.Random, hostile: bool = False) -> tuple[bytes, bool]:
    """One post-handshake frame: (bytes, whether the agent is expected to answer it and
    keep the link). *hostile*: a frame of a wrong shape or with mutated bytes."""
    session = rng.randint(1, 2**31)
    kind = rng.choice([5, 7]) if hostile else rng.choice([0, 1, 2, 3, 4, 6])
    if kind == 0:
        return msgpack.packb([CALL, session, "diag", "ping", []]), True
    if kind == 1:
        return msgpack.packb([CALL, session, "diag", "echo", [rand_text(rng)]]), True
    if kind == 2:
        return msgpack.packb([CALL, session, f"fuzz{rng.randrange(9)}", rand_text(rng, 5),
                              []]), True
    if kind == 3:
        return msgpack.packb([SEND, "fuzz", rand_text(rng, 4), [1, 2]]), True
    if kind == 4:
        return msgpack.packb([PING, rng.randrange(1000)]), True
    if kind == 5:  # wrong shapes: arity, kinds, types
        return msgpack.packb(rng.choice([
            [CALL, session], [CALL, "x", "diag", "ping", []], [REPLY, session, 1],
            [ERROR, session, "k", "m"], [99, 1], {"a": 1}, 5, "str", [], [OK, b"x"],
            [HELLO, "x", b"n"], [CALL, session, "diag", "echo", {"not": "a list"}],
            [CALL, session, "diag", "ping", [1, 2, 3]]])), False
    if kind == 6:  # deep nesting and big numbers
        obj: Any = [1]
        for _ in range(rng.randint(10, 200)):
            obj = [obj]
        return msgpack.packb([CALL, session, "fuzz", "deep", [obj, 2**63 - 1]]), True
    template = msgpack.packb(rng.choice([
        [CALL, session, "diag", "ping", []], [SEND, "fuzz", "m", []], [PING, 1]]))
    return mutate(rng, template), False


# -- one connection that counts answers --------------------------------------------------------

class Counting(protocol.Protocol):
    """Counts answers on a client or cluster connection; fires ``closed`` when it ends."""

    def __init__(self, downstream: str) -> None:
        self.kind = downstream
        self.answers = 0
        self.oks = 0  # client answers with code OK
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.greeting: defer.Deferred[Any] = defer.Deferred()
        self._client = FrameDecoder(downstream=True, max_length=16 << 20)
        self._cluster = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.by_server = False
        self.bad_stream = False

    def dataReceived(self, data: bytes) -> None:
        if self.kind == "client":
            try:
                for proto, session, body in self._client.feed(data):
                    if session:
                        self.answers += 1
                        if proto in REGISTRY.responses:
                            r = REGISTRY.responses[proto]()
                            try:
                                r.ParseFromString(body)
                                if getattr(r, "code", None) == E.OK:
                                    self.oks += 1
                            except Exception:
                                self.bad_stream = True
            except FrameError:
                self.bad_stream = True
            return
        self._cluster.feed(data)
        for obj in self._cluster:
            if not self.greeting.called:
                self.greeting.callback(obj)
            else:
                self.answers += 1

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed.called:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()


@attrs.define
class Tally:
    frames: int = 0  # handled by the node: answered, or closed on
    written: int = 0
    connections: int = 0
    closes: int = 0
    unauthenticated_oks: int = 0


class Fuzz:
    def __init__(self, reactor: Any, run_dir: Path, *, say: Callable[[str], None] = print,
                 seed: int | None = None, client_frames: int = 100_000,
                 cluster_frames: int = 10_000, gm_requests: int = 5_000) -> None:
        self.reactor = reactor
        self.say = say
        self.seed = seed if seed is not None else random.randrange(2**31)
        self.rng = random.Random(self.seed)
        self.h = Harness(reactor, run_dir, regions=1, roles=1, logins=1, say=say)
        self.targets = {"client": client_frames, "cluster": cluster_frames,
                        "gm": gm_requests}
        self.tallies: dict[str, Tally] = {}
        self.gm_status: Counter[int] = Counter()
        self.gm_500: list[str] = []
        self.env: Env | None = None
        self.fd_kinds: dict[str, Counter[str]] = {}
        """What each node's fds pointed at when the baseline was taken."""

    def sleep(self, s: float) -> defer.Deferred[None]:
        return task.deferLater(self.reactor, s)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        h = self.h
        self.say(f"rl-chaos fuzz: seed {self.seed}; starting {len(h.names)} nodes in "
                 f"{h.run_dir}")
        await h.start()
        env = self.env = Env(self.reactor, h.logins(), h.role_by_port(), Ledger(),
                             seed=self.seed)
        try:
            warm = await probe_login(env, f"fuzz-warm-{secrets.token_hex(3)}")
            warm_rename = await self._warm_rename()
            await h.call("master", "diag", "ping")
            await self.sleep(1.0)
            pids = h.pids()
            baseline = {n: fd_count(p) for n, p in pids.items()}
            self.fd_kinds = {n: fd_kinds(p) for n, p in pids.items()}
            self.say(f"  warm-up login {warm}, rename {warm_rename}; fd baseline {baseline}")
            t = time.monotonic()
            await self.client_fuzz(self.targets["client"])
            self.say(f"  client ports: {self._line('login')} | {self._line('gateway-pre')} "
                     f"| {self._line('gateway-post')} ({time.monotonic() - t:.1f}s)")
            t = time.monotonic()
            await self.cluster_fuzz(self.targets["cluster"])
            self.say(f"  cluster ports: {self._line('cluster-pre')} | "
                     f"{self._line('cluster-post')} ({time.monotonic() - t:.1f}s)")
            t = time.monotonic()
            await self.gm_fuzz(self.targets["gm"])
            self.say(f"  GM API: {sum(self.gm_status.values())} requests, status "
                     f"{dict(sorted(self.gm_status.items()))} ({time.monotonic() - t:.1f}s)")
            result = await self.check(pids, baseline)
        finally:
            await h.stop()
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    async def _warm_rename(self) -> str:
        """A player logs in, renames itself and sends a claim, a recall and a guild list,
        so that what nodes open lazily (the player database for the rolecity's, mail's and
        map's fences; the role-to-guild link) is open before the fd baseline: an fd opened
        once and kept is not a leak."""
        assert self.env is not None
        env = self.env
        try:
            r: Any = await login(env, f"fuzz-warm-{secrets.token_hex(3)}", 1)
            if r.code != E.OK:
                return str(E.Name(r.code))
            conn = await connect(env, r.host, r.port)
            try:
                a: Any = await conn.request(pb.Auth(userid=r.userid, secret=r.secret))
                if a.code != E.OK:
                    return str(E.Name(a.code))
                n: Any = await conn.request(pb.Rename(name=f"w{secrets.token_hex(4)}"))
                # the map and mail nodes read the player database for their fence at the
                # first fenced request (its SQLite files stay open), and the role node links
                # to the guild node at its first guild request: answered with a refusal,
                # they open now
                for warm in (pb.MailClaim(mail_id=1), pb.MarchRecall(march_id=1),
                             pb.GuildList(region=1)):
                    await conn.request(warm)
                return str(E.Name(n.code))
            finally:
                conn.close()
        except Exception as e:
            return type(e).__name__

    def _line(self, name: str) -> str:
        t = self.tallies.get(name, Tally())
        return f"{name} {t.frames} frames/{t.connections} conns"

    # -- client ports -----------------------------------------------------------------------

    async def client_fuzz(self, target: int) -> None:
        h = self.h
        [login_node] = h.kind_nodes("login")
        [role_node] = h.kind_nodes("role")
        lc = h.cluster
        login_addr = (lc.node_config(login_node)["host"],
                      lc.node_config(login_node)["client_port"])
        role_addr = (lc.node_config(role_node)["host"], lc.node_config(role_node)["client_port"])
        shares = {"login": 0.45, "gateway-pre": 0.05, "gateway-post": 0.5}
        workers = []
        for name, share in shares.items():
            want = int(target * share)
            per = max(1, want // 4)
            for w in range(4):
                workers.append(defer.Deferred.fromCoroutine(self._client_worker(
                    name, login_addr if name == "login" else role_addr, per, w)))
        await defer.gatherResults(workers)

    async def _client_worker(self, name: str, addr: tuple[str, int], want: int,
                             worker: int) -> None:
        tally = self.tallies.setdefault(name, Tally())
        rng = random.Random(self.rng.random())
        protos = sorted(REGISTRY.requests)
        done = 0
        n_player = 0
        while done < want:
            conn = Counting("client")
            try:
                await connectProtocol(TCP4ClientEndpoint(self.reactor, *addr, timeout=5), conn)
            except Exception:
                await self.sleep(0.1)
                continue
            tally.connections += 1
            if name == "gateway-post":
                n_player += 1
                if not await self._auth(conn, f"fuzz-{name}-{worker}-{n_player}"):
                    conn.close()
                    await self.sleep(0.2)
                    continue
            while done < want and not conn.closed.called:
                batch, benign = self._client_batch(rng, name, protos)
                before = conn.answers
                conn.write(b"".join(batch))
                tally.written += len(batch)
                hostile = len(batch) - benign
                expect = before + benign
                deadline = time.monotonic() + (2.0 if hostile else 10.0)
                while conn.answers < expect and not conn.closed.called \
                        and time.monotonic() < deadline:
                    await self.sleep(0.005)
                if hostile and not conn.closed.called:
                    # a hostile frame may leave the node waiting for bytes: give it a
                    # moment to close, then close ourselves
                    end = time.monotonic() + 0.5
                    while not conn.closed.called and time.monotonic() < end:
                        await self.sleep(0.01)
                got = conn.answers - before
                # the frame a node closed on is handled too (unless it was answered first)
                handled = min(len(batch), got + (1 if conn.closed.called else 0))
                tally.frames += handled
                done += handled
                if hostile:
                    break
            if name == "gateway-pre":  # nothing but a good Auth may be answered OK here
                tally.unauthenticated_oks += conn.oks
            if conn.closed.called:
                tally.closes += 1
            conn.close()
            await conn.closed

    def _client_batch(self, rng: random.Random, name: str,
                      protos: list[int]) -> tuple[list[bytes], int]:
        """(frames, how many of them are expected to be answered); a hostile frame, if any,
        is last."""
        frames: list[bytes] = []
        if name == "gateway-pre":  # before Auth only one request is ever looked at
            if rng.random() < 0.5:
                body = pb.Auth(userid=rand_int(rng) % 2**32,
                               secret=rand_text(rng)).SerializeToString()
                return [frame(REGISTRY.id_of(pb.Auth), 1, body)], 0
            cls = REGISTRY.requests[rng.choice(protos)]
            return [frame(REGISTRY.id_of(cls), rng.randint(1, 9), random_message(rng, cls))], 0
        n = rng.randint(5, 60)
        for i in range(n):
            s = rng.randint(1, 2**32 - 1)
            if name == "login":
                frames.append(frame(REGISTRY.id_of(pb.Login), s, random_message(rng, pb.Login)))
            else:
                r = rng.random()
                if r < 0.6:
                    frames.append(frame(REGISTRY.id_of(pb.Heartbeat), s,
                                        random_message(rng, pb.Heartbeat)))
                elif r < 0.9:
                    frames.append(frame(REGISTRY.id_of(pb.Rename), s,
                                        pb.Rename(name=rand_text(rng)).SerializeToString()))
                else:
                    frames.append(frame(REGISTRY.id_of(pb.Login), s,
                                        random_message(rng, pb.Login)))
            del i
        benign = len(frames)
        if rng.random() < 0.25:
            if name == "gateway-post" and rng.random() < 0.2:
                frames.append(frame(REGISTRY.id_of(pb.Auth), 7, b""))  # Auth twice
            else:
                frames.append(hostile_client_frame(rng, protos))
        return frames, benign

    async def _auth(self, conn: Counting, openid: str) -> bool:
        """Log a fuzz player in properly, then Auth on *conn* (already connected to the
        gateway): True if it is authenticated."""
        assert self.env is not None
        for _ in range(20):
            try:
                r = await login(self.env, openid, 1)
            except Exception:
                await self.sleep(0.2)
                continue
            if r.code != E.OK:
                await self.sleep(0.2)
                continue
            conn.write(frame(REGISTRY.id_of(pb.Auth), 1, pb.Auth(
                userid=r.userid, secret=r.secret).SerializeToString()))
            deadline = time.monotonic() + 10
            while conn.answers < 1 and not conn.closed.called and time.monotonic() < deadline:
                await self.sleep(0.005)
            return conn.oks == 1
        return False

    # -- cluster ports ------------------------------------------------------------------------

    async def cluster_fuzz(self, target: int) -> None:
        h = self.h
        nodes = list(h.pids())
        pre = int(target * 0.3)
        post = target - pre
        workers = []
        for i, name in enumerate(nodes):
            host, port = h.cluster.address(name)
            share_pre = pre // len(nodes) + (1 if i < pre % len(nodes) else 0)
            share_post = post // len(nodes) + (1 if i < post % len(nodes) else 0)
            workers.append(defer.Deferred.fromCoroutine(
                self._cluster_pre(host, port, share_pre)))
            workers.append(defer.Deferred.fromCoroutine(
                self._cluster_post(name, host, port, share_post)))
        await defer.gatherResults(workers)

    async def _open_cluster(self, host: str, port: int) -> tuple[Counting, Any] | None:
        conn = Counting("cluster")
        try:
            await connectProtocol(TCP4ClientEndpoint(self.reactor, host, port, timeout=5), conn)
            hello = await conn.greeting.addTimeout(5, self.reactor)
        except Exception:
            conn.close()
            return None
        return conn, hello

    async def _cluster_pre(self, host: str, port: int, want: int) -> None:
        tally = self.tallies.setdefault("cluster-pre", Tally())
        rng = random.Random(self.rng.random())
        done = 0
        while done < want:
            opened = await self._open_cluster(host, port)
            if opened is None:
                await self.sleep(0.1)
                continue
            conn, hello = opened
            tally.connections += 1
            nonce = hello[2] if isinstance(hello, list) and len(hello) == 3 else b"x" * 16
            kind = rng.randrange(6)
            if kind == 0:
                data = msgpack.packb([AUTH, "intruder", b"n" * 16, rng.randbytes(32)])
            elif kind == 1:
                data = msgpack.packb([AUTH, "intruder", b"short", mac(b"guess", b"S", nonce,
                                                                       "intruder", "x")])
            elif kind == 2:
                data = msgpack.packb([CALL, 1, "slaveflow", "shutdown", []])
            elif kind == 3:
                data = msgpack.packb([SEND, "gateway", "kick", [1, "x"]])
            elif kind == 4:
                data = rng.randbytes(rng.randint(1, 300))
            else:
                data = mutate(rng, msgpack.packb([AUTH, "x", b"n" * 16, b"m" * 32]))
            conn.write(data)
            tally.written += 1
            end = time.monotonic() + 1.0
            while not conn.closed.called and time.monotonic() < end:
                await self.sleep(0.005)
            if conn.closed.called:
                tally.closes += 1
            else:  # incomplete msgpack: the node waits (bounded by its handshake timer)
                conn.close()
                await conn.closed
            tally.frames += 1
            done += 1

    async def _cluster_post(self, node: str, host: str, port: int, want: int) -> None:
        tally = self.tallies.setdefault("cluster-post", Tally())
        rng = random.Random(self.rng.random())
        done = 0
        me = f"fuzz{rng.randrange(1000)}"
        while done < want:
            opened = await self._open_cluster(host, port)
            if opened is None:
                await self.sleep(0.1)
                continue
            conn, hello = opened
            tally.connections += 1
            _, agent, nonce = hello
            my_nonce = os.urandom(16)
            conn.write(msgpack.packb(
                [AUTH, me, my_nonce, mac(self.secret(), b"S", nonce, me, agent)],
                use_bin_type=True))
            deadline = time.monotonic() + 5
            while conn.answers < 1 and not conn.closed.called and time.monotonic() < deadline:
                await self.sleep(0.005)
            if conn.answers < 1:
                conn.close()
                continue
            while done < want and not conn.closed.called:
                batch, expect = [], 0
                hostile = False
                n = rng.randint(5, 60)
                for i in range(n):
                    data, answered = cluster_frame(rng, hostile=i == n - 1
                                                   and rng.random() < 0.3)
                    if not safe_cluster_bytes(data):
                        continue
                    batch.append(data)
                    if not answered:
                        hostile = True
                        break
                    expect += 1
                if not batch:
                    continue
                before = conn.answers
                conn.write(b"".join(batch))
                tally.written += len(batch)
                end = time.monotonic() + (1.0 if hostile else 10.0)
                while conn.answers < before + expect and not conn.closed.called \
                        and time.monotonic() < end:
                    await self.sleep(0.005)
                if hostile and not conn.closed.called:
                    end = time.monotonic() + 0.3
                    while not conn.closed.called and time.monotonic() < end:
                        await self.sleep(0.01)
                handled = min(len(batch), conn.answers - before
                              + (1 if conn.closed.called else 0))
                tally.frames += handled
                done += handled
                if hostile:
                    break
            if conn.closed.called:
                tally.closes += 1
            conn.close()
            await conn.closed

    def secret(self) -> bytes:
        return str(self.h.cluster.sections["cluster"]["secret"]).encode()

    # -- the GM API ---------------------------------------------------------------------------

    async def gm_fuzz(self, target: int) -> None:
        m = self.h.cluster.sections["master"]
        host, port, token = m["gm_host"], m["gm_port"], m["gm_token"]
        per = target // 2
        await defer.gatherResults([
            threads.deferToThread(self._gm_thread, host, port, token, per,
                                  random.Random(self.rng.random()))
            for _ in range(2)])

    def _gm_thread(self, host: str, port: int, token: str, count: int,
                   rng: random.Random) -> None:
        """Blocking: *count* requests over keep-alive connections (http.client)."""
        paths = ["/health", "/metrics", "/nodes", "/login/close", "/login/open", "/shutdown",
                 "/call", "/sd", "/hotfix", "/hotfix/rollback", "/config/reload", "/datafix",
                 "/players", "/", "/nodes/../shutdown", "/%2e%2e/shutdown", "/call?x=1",
                 "/" + "a" * 3000]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for _ in range(count):
            with_token = rng.random() < 0.4
            method = "GET" if with_token else rng.choice(
                ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"])
            path = rng.choice(paths) if rng.random() < 0.8 else "/" + rand_text(rng, 12)
            path = "".join(c if 33 <= ord(c) < 127 else "%%%02X" % (ord(c) & 0xFF)
                           for c in path)
            headers = {}
            if with_token:
                headers["Authorization"] = f"Bearer {token}"
            elif rng.random() < 0.5:
                headers["Authorization"] = rng.choice(
                    ["Bearer wrong", "Bearer", "Basic Zm9vOmJhcg==", "bearer " + token[:-1],
                     "Bearer " + token + "x", "\t"])
            body = self._gm_body(rng)
            if body is not None:
                headers["Content-Type"] = rng.choice(["application/json", "text/plain"])
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                status = -1
                self.reactor.callFromThread(self._gm_note, -1,
                                            f"{method} {path[:60]}: {type(e).__name__}")
                continue
            self.reactor.callFromThread(self._gm_note, status,
                                        f"{method} {path[:60]} token={with_token}")
        conn.close()

    def _gm_note(self, status: int, what: str) -> None:
        self.gm_status[status] += 1
        if status >= 500 and len(self.gm_500) < 20:
            self.gm_500.append(f"{status} {what}")

    @staticmethod
    def _gm_body(rng: random.Random) -> bytes | None:
        r = rng.random()
        if r < 0.3:
            return None
        if r < 0.5:
            return rng.randbytes(rng.randint(0, 200))
        if r < 0.6:
            return b"{" * rng.randint(1, 5000)
        obj: Any = rng.choice([
            {"node": rand_text(rng), "service": 1, "method": None, "args": "x"},
            {"force": "yes"}, {"timeout": -1}, {"timeout": 1e308}, {"kinds": [1, {}]},
            {"fix_id": ""}, [1, 2], "str", 12, None, {"args": [[[[]]]]}])
        return json.dumps(obj).encode()

    # -- after --------------------------------------------------------------------------------

    async def check(self, pids: dict[str, int], baseline: dict[str, int]) -> dict[str, Any]:
        h = self.h
        assert self.env is not None
        crashed = [n for n, p in h.cluster.nodes.items() if not p.running]
        try:
            states = await h.cluster.node_states()
        except Exception as e:
            states = {"master": f"GM did not answer: {e}"}
        not_up = {n: s for n, s in states.items() if s != "up"}
        login_after = await probe_login(self.env, f"fuzz-after-{secrets.token_hex(3)}")
        leaks = await self._fds_back(pids, baseline)
        unauth = {}
        for name in pids:
            unauth[name] = await self._metric(name, "rl_cluster_unauthenticated_dispatches_total")
        client_unauth = sum(t.unauthenticated_oks for t in self.tallies.values())
        tracebacks = {n: count_tracebacks(h.run_dir / f"{n}.log") for n in pids}
        client = sum(t.frames for k, t in self.tallies.items() if not k.startswith("cluster"))
        cluster = sum(t.frames for k, t in self.tallies.items() if k.startswith("cluster"))
        gm_500s = sum(n for s, n in self.gm_status.items() if s >= 500)
        unauth_total = int(sum(v for v in unauth.values() if v is not None)) + client_unauth
        failures = []
        if crashed:
            failures.append(f"nodes crashed: {crashed}")
        if not_up:
            failures.append(f"nodes not up in master's table: {not_up}")
        if login_after != "OK":
            failures.append(f"a login after the fuzz answered {login_after}")
        opened = {}
        if any(leaks.values()):
            # what the extra fds are: sockets (links, connections) or files (a database
            # opened lazily), so a report says where to look
            opened = {n: dict(fd_kinds(p) - self.fd_kinds.get(n, Counter()))
                      for n, p in pids.items() if leaks[n]}
            failures.append(f"fd leaks: {leaks}; new fds: {opened}")
        if unauth_total:
            failures.append(f"unauthenticated actions: {unauth_total}")
        if any(v is None for v in unauth.values()):
            failures.append(f"no unauthenticated-dispatch metric from "
                            f"{[n for n, v in unauth.items() if v is None]}")
        if any(tracebacks.values()):
            failures.append(f"unexpected errors logged (tracebacks): "
                            f"{ {n: c for n, c in tracebacks.items() if c} }")
        if gm_500s:
            failures.append(f"GM answered 5xx {gm_500s} times: {self.gm_500[:5]}")
        if client < self.targets["client"] or cluster < self.targets["cluster"]:
            failures.append(f"short of the targets: client {client}/{self.targets['client']}, "
                            f"cluster {cluster}/{self.targets['cluster']}")
        return {
            "client_frames": client, "cluster_frames": cluster,
            "gm_requests": sum(self.gm_status.values()),
            "crashes": len(crashed), "fd_leaks": sum(leaks.values()),
            "unauthenticated_actions": unauth_total, "gm_500s": gm_500s,
            "login_after": login_after, "failures": failures, "seed": self.seed,
            "per_port": {k: attrs.asdict(t) for k, t in sorted(self.tallies.items())},
            "gm_status": {str(k): v for k, v in sorted(self.gm_status.items())},
            "fd": {"baseline": baseline, "leaked": leaks, "new": opened},
            "unauthenticated_dispatches": unauth, "unexpected_errors": tracebacks,
            "targets": self.targets,
        }

    async def _fds_back(self, pids: dict[str, int], baseline: dict[str, int]) -> dict[str, int]:
        deadline = time.monotonic() + FD_SLACK_WAIT
        while True:
            now = {n: fd_count(p) for n, p in pids.items()}
            leaks = {n: max(0, now[n] - baseline[n]) for n in pids}
            if not any(leaks.values()) or time.monotonic() > deadline:
                return leaks
            await self.sleep(0.5)

    async def _metric(self, node: str, metric: str) -> float | None:
        import treq

        try:
            r = await treq.get(f"http://127.0.0.1:{self.h.metrics_port(node)}/metrics",
                               persistent=False, timeout=5)
            text = (await treq.content(r)).decode()
        except Exception:
            return None
        for line in text.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return None


def fd_kinds(pid: int) -> Counter[str]:
    """What *pid*'s open fds point at: file paths, and ``socket``/``pipe``/``anon_inode``
    kinds counted without their inode numbers."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kinds[target.split(":[", 1)[0] if ":[" in target else target] += 1
    return kinds


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


#: tracebacks a library logs while it answers correctly (Klein: a request path that is not
#: UTF-8 gets its 400 with this line and a traceback)
EXPECTED_TRACEBACKS = ("Invalid encoding in PATH_INFO",)


def count_tracebacks(path: Path) -> int:
    """Unexpected errors a node logged: tracebacks but the expected ones."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    n = 0
    for head, _ in re.findall(r"([^\n]*)\n(\tTraceback \(most recent call last\))", text):
        if not any(marker in head for marker in EXPECTED_TRACEBACKS):
            n += 1
    return n


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{'port':<14} {'frames':>8} {'written':>8} {'conns':>6} {'closes':>6}",
             "-" * 46]
    for name, t in r["per_port"].items():
        lines.append(f"{name:<14} {t['frames']:>8} {t['written']:>8} {t['connections']:>6} "
                     f"{t['closes']:>6}")
    lines.append("")
    lines.append(f"client frames {r['client_frames']} (target {r['targets']['client']}), "
                 f"cluster frames {r['cluster_frames']} (target {r['targets']['cluster']}), "
                 f"GM requests {r['gm_requests']} {r['gm_status']}")
    lines.append(f"crashes {r['crashes']}, fd leaks {r['fd_leaks']}, unauthenticated actions "
                 f"{r['unauthenticated_actions']}, GM 5xx {r['gm_500s']}, login after "
                 f"{r['login_after']}; unexpected errors logged {r['unexpected_errors']}")
    lines.append("FAILED: " + "; ".join(r["failures"]) if r["failures"] else "all checks passed")
    return "\n".join(lines)


def write_json(path: str, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")


__all__ = ["Fuzz", "connect", "format_table"]
