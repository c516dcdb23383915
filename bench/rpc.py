"""Benchmark of the cluster layer against a bare-protocol floor, in one run.

    python bench/rpc.py [--quick] [--runs N] [--duration S] [--rows ROWS] [--json PATH]

A real ``twistd rl-logiccenter`` node process serves ``diag.echo``/``diag.tally``; this
process is node ``login1`` and drives it through ``Cluster.call``/``send``. The floor is
``bench/floor.py``: a 4-byte-length-prefixed msgpack echo on a bare Twisted Protocol in
its own process, driven the same way. Each row is measured for rltwist and the floor
alternately, ``--runs`` times; the table shows medians with min-max, ratio = rltwist/floor.

For send rows, ``outstanding`` is the number of sends issued per reactor turn; delivery is
confirmed by a count query travelling behind the sends on the same connection.

The last row, ``paused_peer``, checks the bounds rather than speed: the node process is
SIGSTOPped and this process keeps sending to it (``--paused-sends`` sends of
``--paused-payload`` bytes, 100 per reactor turn, the same again after the outbound queue
is full, then 100 per 10 ms for ``--paused-hold`` seconds); it reports how much this
process' RSS grew against ``cluster.max_outbound``, how many sends were dropped (by
reason), whether a call failed at once and when the silent link was closed, then SIGCONTs
the node and counts what it received. The exit status is 1 if RSS grew past
max_outbound + 20 MB or nothing was dropped.

Both sides share a 2-core machine with whatever else runs on it, so rates move with the
load (printed at the end). A second table gives the CPU time per operation of this process
and of the serving process (from /proc), which moves much less and shows which side costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import floor

from rltwist.cli import react_main
from rltwist.cluster import Cluster
from rltwist.config import load_config
from rltwist.launcher import LocalCluster, NodeProcess, free_ports
from rltwist.stats import percentile

PAUSED = "paused_peer"
ROWS = [("call", 50, 1), ("call", 50, 100), ("call", 4096, 1), ("call", 4096, 100),
        ("send", 50, 100), ("send", 4096, 100)]
MiB = 1024 * 1024
RSS_SLACK_MB = 20  # the paused row passes if RSS grew less than max_outbound + this
SYNC_EVERY = 1000      # sends between two delivery-count queries
SYNC_IN_FLIGHT = 4     # queries allowed in flight before issuing pauses


class Driver:
    """The two operations, bound either to rltwist or to the floor."""

    server_pid: int | None = None  # the serving process, for its CPU time
    call: Callable[[bytes, Callable[[Any], None]], None]
    send: Callable[[bytes], None]
    count: Callable[[Callable[[int], None]], None]
    # where a failed call or count goes: the measurement in progress fails with it
    on_failure: Callable[[Failure], None] = staticmethod(lambda f: None)  # type: ignore[assignment]


class RltwistDriver(Driver):
    def __init__(self, cluster: Cluster, target: str) -> None:
        self.cluster, self.target = cluster, target
        self.tag = "bench"

    def call(self, payload: bytes, cb: Callable[[Any], None]) -> None:
        self.cluster.call(self.target, "diag", "echo", payload).addCallbacks(
            cb, self.on_failure)

    def send(self, payload: bytes) -> None:
        self.cluster.send(self.target, "diag", "tally", self.tag, payload)

    def count(self, cb: Callable[[int], None]) -> None:
        self.cluster.call(self.target, "diag", "tally_of", self.tag).addCallbacks(
            cb, self.on_failure)


class FloorDriver(Driver):
    def __init__(self, client: floor.FloorClient) -> None:
        self.client = client

    def call(self, payload: bytes, cb: Callable[[Any], None]) -> None:
        self.client.call(payload, cb)

    def send(self, payload: bytes) -> None:
        self.client.send(payload)

    def count(self, cb: Callable[[int], None]) -> None:
        self.client.query(cb)


def measure_calls(driver: Driver, payload: bytes, outstanding: int,
                  duration: float) -> defer.Deferred[tuple[float, list[float]]]:
    """Keep *outstanding* calls in flight for *duration* s; return (rate, latencies)."""
    result: defer.Deferred[tuple[float, list[float]]] = defer.Deferred()
    perf = time.perf_counter
    latencies: list[float] = []
    state = {"done": 0, "active": outstanding}
    start = perf()
    stop_at = start + duration

    def issue() -> None:
        t0 = perf()

        def replied(_: Any) -> None:
            now = perf()
            state["done"] += 1
            if outstanding == 1:
                latencies.append(now - t0)
            if now < stop_at:
                issue()
            else:
                state["active"] -= 1
                if state["active"] == 0:
                    result.callback((state["done"] / (now - start), latencies))

        driver.call(payload, replied)

    for _ in range(outstanding):
        issue()
    return result


def measure_sends(driver: Driver, payload: bytes, per_turn: int,
                  duration: float) -> defer.Deferred[float]:
    """Issue sends for *duration* s; return the rate delivered (confirmed by count)."""
    result: defer.Deferred[float] = defer.Deferred()
    perf = time.perf_counter
    state = {"sent": 0, "syncs": 0, "base": None}

    def begin(base: int) -> None:
        state["base"] = base
        start = perf()
        stop_at = start + duration

        def synced(_: int) -> None:
            state["syncs"] -= 1

        def pump() -> None:
            if perf() >= stop_at:
                driver.count(lambda n: result.callback((n - base) / (perf() - start)))
                return
            if state["syncs"] < SYNC_IN_FLIGHT:
                for _ in range(per_turn):
                    driver.send(payload)
                state["sent"] += per_turn
                if state["sent"] % SYNC_EVERY < per_turn:
                    state["syncs"] += 1
                    driver.count(synced)
            reactor.callLater(0, pump)

        pump()

    driver.count(begin)
    return result


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by process *pid*; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Cost:
    """CPU per operation of the driving process (this one) and of the serving process."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.client0 = time.process_time()
        self.server0 = process_cpu(server_pid)

    def per_op(self, ops: float) -> tuple[float, float | None]:
        client = (time.process_time() - self.client0) / ops
        server_now = process_cpu(self.server_pid)
        if server_now is None or self.server0 is None:
            return client, None
        return client, (server_now - self.server0) / ops


def bounded(d: defer.Deferred[Any], driver: Driver, duration: float) -> defer.Deferred[Any]:
    """*d*, failed by the first failed call or count of *driver*, or by a timeout."""

    def fail(f: Failure) -> None:
        if not d.called:
            d.errback(f)

    driver.on_failure = fail
    return d.addTimeout(duration + 60, reactor)


async def run_row(driver: Driver, metric: str, size: int, outstanding: int,
                  duration: float) -> tuple[float, list[float], tuple[float, float | None]]:
    """(rate, call latencies, (client, server) CPU seconds per operation) of one run."""
    payload = b"x" * size
    warm = min(0.3, duration)
    if metric == "call":
        await bounded(measure_calls(driver, payload, outstanding, warm), driver, warm)
        cost, started = Cost(driver.server_pid), time.perf_counter()
        rate, latencies = await bounded(
            measure_calls(driver, payload, outstanding, duration), driver, duration)
    else:
        await bounded(measure_sends(driver, payload, outstanding, warm), driver, warm)
        cost, started = Cost(driver.server_pid), time.perf_counter()
        rate, latencies = await bounded(
            measure_sends(driver, payload, outstanding, duration), driver, duration), []
    return rate, latencies, cost.per_op(rate * (time.perf_counter() - started))


def median_us(costs: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    servers = [s for _, s in costs if s is not None]
    return (round(statistics.median(c for c, _ in costs) * 1e6, 2),
            round(statistics.median(servers) * 1e6, 2) if servers else None)


def us(seconds: float | None) -> float | None:
    return round(seconds * 1e6, 1) if seconds is not None else None


def fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def pct(values: list[float], p: float) -> float | None:
    return percentile(values, p) if values else None


def rss_bytes() -> int:
    """Resident set size of this process (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def call_now(me: Cluster, target: str, payload: bytes) -> str:
    """Make one call and say how it ended before control returns to the reactor (with the
    outbound queue full it must fail at once, not wait for its timeout)."""
    outcome: list[str] = []
    t0 = time.perf_counter()
    d = me.call(target, "diag", "echo", payload)
    d.addCallbacks(lambda _: outcome.append("answered"),
                   lambda f: outcome.append(type(f.value).__name__))
    took = (time.perf_counter() - t0) * 1e6
    return f"{outcome[0]} after {took:.0f} us" if outcome else "still pending"


async def paused_peer(me: Cluster, target: str, proc: NodeProcess, payload_size: int,
                      sends: int, hold: float) -> dict[str, Any]:
    """SIGSTOP the node, send to it, and measure what the bounds let this process hold."""
    sender = me.senders[target]
    tag = "paused"
    payload = b"p" * payload_size
    gc.collect()
    rss0 = peak_rss = rss_bytes()
    peak_outbound = offered = 0
    call_result = "not tried"
    silent_after: float | None = None
    silent0 = me.stats.link_closes.get("peer silent", 0)

    def offer() -> None:
        nonlocal offered, peak_outbound, peak_rss, silent_after
        for _ in range(100):
            me.send(target, "diag", "tally", tag, payload)
        offered += 100
        peak_outbound = max(peak_outbound, sender.outbound_bytes())
        peak_rss = max(peak_rss, rss_bytes())
        if silent_after is None and me.stats.link_closes.get("peer silent", 0) > silent0:
            silent_after = time.perf_counter() - started

    proc.pause()
    started = time.perf_counter()
    try:
        # a burst: *sends*, and as many again once drops start (the queue is then full)
        full_at: int | None = None
        while offered < (sends if full_at is None else full_at + sends):
            offer()
            if full_at is None and me.stats.dropped(target):
                full_at = offered
                call_result = call_now(me, target, payload)
            await task.deferLater(reactor, 0)
        burst = time.perf_counter() - started
        # then a steady trickle while the node stays frozen: the bound holds over time,
        # and the silent link is noticed (cluster.ping_interval + ping_timeout)
        hold_until = time.perf_counter() + hold
        while time.perf_counter() < hold_until:
            offer()
            await task.deferLater(reactor, 0.01)
        paused_for = time.perf_counter() - started
    finally:
        proc.resume()
    dropped = {reason: n for (peer, reason), n in me.stats.sends_dropped.items()
               if peer == target}
    lost = me.stats.lost(target)
    # after SIGCONT: wait (bounded) until the node has taken everything still on its way;
    # sends counted lost went down with a link unconfirmed, so some may still have arrived
    at_least = offered - sum(dropped.values()) - lost
    delivered = -1
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        try:
            delivered = await me.call(target, "diag", "tally_of", tag, timeout=5.0)
        except Exception:
            delivered = -1
        if delivered >= at_least:
            break
        await task.deferLater(reactor, 0.05)
    growth = (peak_rss - rss0) / MiB
    bound = me.max_outbound / MiB
    return {
        "metric": PAUSED, "payload": payload_size, "sends_offered": offered,
        "burst_s": round(burst, 2), "paused_s": round(paused_for, 2),
        "caller_rss_growth_mb": round(growth, 1), "max_outbound_mb": round(bound, 1),
        "rss_within_bound": growth < bound + RSS_SLACK_MB,
        "outbound_peak_mb": round(peak_outbound / MiB, 1),
        "sends_dropped": sum(dropped.values()), "sends_dropped_by_reason": dropped,
        "sends_lost": lost, "call_when_full": call_result,
        "link_silent_after_s": round(silent_after, 2) if silent_after is not None else None,
        "delivered_after_resume": delivered,
        "delivered_expected": [at_least, at_least + lost],
    }


def print_paused(r: dict[str, Any]) -> None:
    print(f"\npaused peer (SIGSTOP) for {r['paused_s']:.1f}s: {r['sends_offered']} sends of "
          f"{r['payload']} B offered (burst in {r['burst_s']:.2f}s, then 100 per 10 ms)")
    print(f"  caller RSS +{r['caller_rss_growth_mb']:.1f} MB (bound: max_outbound "
          f"{r['max_outbound_mb']:.0f} MB + {RSS_SLACK_MB} MB: "
          f"{'ok' if r['rss_within_bound'] else 'EXCEEDED'}), outbound peak "
          f"{r['outbound_peak_mb']:.1f} MB")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["sends_dropped_by_reason"].items()))
    print(f"  sends dropped {r['sends_dropped']} ({reasons or 'none'}), lost with a link "
          f"{r['sends_lost']}; a call with the queue full: {r['call_when_full']}")
    silent = r["link_silent_after_s"]
    print(f"  silent link closed: {f'after {silent:.1f}s' if silent is not None else 'no'}; "
          f"after SIGCONT the node received {r['delivered_after_resume']} (offered - dropped "
          f"- lost = {r['delivered_expected'][0]}, up to {r['delivered_expected'][1]})")


async def start_floor(run_dir: str) -> tuple[Any, floor.FloorClient]:
    port = free_ports(1)[0]
    ready: defer.Deferred[None] = defer.Deferred()

    class Watch(protocol.ProcessProtocol):
        def outReceived(self, data: bytes) -> None:
            if b"floor echo ready" in data and not ready.called:
                ready.callback(None)

        def processEnded(self, reason: Any) -> None:
            if not ready.called:
                ready.errback(RuntimeError(f"floor server exited: {reason.value}"))

    proc = reactor.spawnProcess(  # type: ignore[attr-defined]
        Watch(), sys.executable, [sys.executable, floor.__file__, str(port)],
        env=dict(os.environ), path=run_dir)
    await ready.addTimeout(15, reactor)
    client = floor.FloorClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return proc, client


async def main(args: argparse.Namespace) -> int:
    run_dir = tempfile.mkdtemp(prefix="rl-bench-rpc-")
    lc = LocalCluster(run_dir, ["logiccenter", "login1"], test_flags=["diag"])  # tally
    floor_proc = None
    me: Cluster | None = None
    try:
        print(f"starting rl-logiccenter node and floor server (run dir {run_dir}) ...",
              flush=True)
        await lc.start("logiccenter")
        config = load_config(lc.config_path)
        node = config.node("login1")
        me = Cluster("login1", config.cluster,
                     {n.name: (n.host, n.port) for n in config.nodes.values()},
                     listen=(node.host, node.port))
        me.startService()
        await me.call("logiccenter", "diag", "ping")
        floor_proc, floor_client = await start_floor(run_dir)
        ours, base = RltwistDriver(me, "logiccenter"), FloorDriver(floor_client)
        ours.server_pid, base.server_pid = lc.nodes["logiccenter"].pid, floor_proc.pid
        load_before = os.getloadavg()
        rows = []
        for metric, size, outstanding in args.rows:
            if metric == PAUSED:
                continue  # measured last: it freezes the node
            rates: list[float] = []
            floors: list[float] = []
            lat: list[float] = []
            floor_lat: list[float] = []
            costs: list[tuple[float, float | None]] = []
            floor_costs: list[tuple[float, float | None]] = []
            for run in range(args.runs):
                rate, latencies, cost = await run_row(ours, metric, size, outstanding,
                                                      args.duration)
                frate, flatencies, fcost = await run_row(base, metric, size, outstanding,
                                                         args.duration)
                rates.append(rate)
                floors.append(frate)
                lat.extend(latencies)
                floor_lat.extend(flatencies)
                costs.append(cost)
                floor_costs.append(fcost)
                print(f"  {metric:4} {size:5} B x{outstanding:<3} run {run + 1}: "
                      f"rltwist {rate:9.0f}/s  floor {frate:9.0f}/s", flush=True)
            med, fmed = statistics.median(rates), statistics.median(floors)
            p50, p99 = pct(lat, 50), pct(lat, 99)
            rows.append({
                "metric": metric, "payload": size, "outstanding": outstanding,
                "rate": round(med, 1), "floor": round(fmed, 1), "ratio": round(med / fmed, 3),
                "p50_us": round(p50 * 1e6, 1) if p50 is not None else None,
                "p99_us": round(p99 * 1e6, 1) if p99 is not None else None,
                "floor_p50_us": us(pct(floor_lat, 50)), "floor_p99_us": us(pct(floor_lat, 99)),
                "rate_min": round(min(rates), 1), "rate_max": round(max(rates), 1),
                "floor_min": round(min(floors), 1), "floor_max": round(max(floors), 1),
                "cpu_us": median_us(costs), "floor_cpu_us": median_us(floor_costs),
            })
        print()
        print(f"rltwist cluster RPC vs bare msgpack floor — {args.runs} run(s) of "
              f"{args.duration:g}s per row, {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}")
        head = (f"{'metric':6} {'payload':>7} {'outst':>5} {'rltwist/s (min-max)':>27} "
                f"{'floor/s (min-max)':>27} {'ratio':>6} {'p50 us':>7} {'p99 us':>7}")
        print(head)
        print("-" * len(head))
        for r in rows:
            ours_s = f"{r['rate']:.0f} ({r['rate_min']:.0f}-{r['rate_max']:.0f})"
            floor_s = f"{r['floor']:.0f} ({r['floor_min']:.0f}-{r['floor_max']:.0f})"
            p50s = f"{r['p50_us']:.0f}" if r["p50_us"] is not None else "-"
            p99s = f"{r['p99_us']:.0f}" if r["p99_us"] is not None else "-"
            print(f"{r['metric']:6} {r['payload']:>7} {r['outstanding']:>5} {ours_s:>27} "
                  f"{floor_s:>27} {r['ratio']:>6.2f} {p50s:>7} {p99s:>7}")
        load_after = os.getloadavg()
        print()
        print("CPU per operation, us (medians): client = this process, server = the node or "
              "the floor server\n(a send row's client spins while delivery lags: there only the "
              "server column means much); and the floor's own call latency.")
        head = (f"{'metric':6} {'payload':>7} {'outst':>5} {'rltwist client':>15} "
                f"{'server':>7} {'floor client':>13} {'server':>7}   {'floor p50/p99 us':>16}")
        print(head)
        print("-" * len(head))
        for r in rows:
            (c, sv), (fc, fsv) = r["cpu_us"], r["floor_cpu_us"]
            flat = (f"{r['floor_p50_us']:.0f}/{r['floor_p99_us']:.0f}"
                    if r["floor_p50_us"] is not None else "-")
            print(f"{r['metric']:6} {r['payload']:>7} {r['outstanding']:>5} {c:>15.2f} "
                  f"{fmt(sv):>7} {fc:>13.2f} {fmt(fsv):>7}   {flat:>16}")
        print(f"\nload average (1, 5, 15 min) before: {fmt_load(load_before)}, "
              f"after: {fmt_load(load_after)}")
        status = 0
        if any(m == PAUSED for m, _, _ in args.rows):
            paused = await paused_peer(me, "logiccenter", lc.nodes["logiccenter"],
                                       args.paused_payload, args.paused_sends,
                                       args.paused_hold)
            print_paused(paused)
            rows.append(paused)
            if not paused["rss_within_bound"] or not paused["sends_dropped"]:
                status = 1
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "runs": args.runs, "duration_s": args.duration,
                           "cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "load_before": load_before, "load_after": load_after}, f,
                          indent=1)
            print(f"\nwrote {args.json}")
        return status
    finally:
        if me is not None:
            await me.stopService()
        if floor_proc is not None:
            floor_proc.signalProcess("KILL")
        await lc.stop_all()


def parse_rows(text: str) -> list[tuple[str, int, int]]:
    rows = []
    for item in text.split(","):
        if item == PAUSED:
            rows.append((PAUSED, 0, 0))
            continue
        metric, size, outstanding = item.split(":")
        if metric not in ("call", "send"):
            raise argparse.ArgumentTypeError(
                f"unknown metric {metric!r} (call, send, or {PAUSED} alone)")
        rows.append((metric, int(size), int(outstanding)))
    return rows


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 run of 1 s per row, 10000 paused sends (< 1 min in all)")
    p.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument("--rows", type=parse_rows, default=[*ROWS, (PAUSED, 0, 0)],
                   metavar="METRIC:BYTES:N,...",
                   help=f"measure only these rows, e.g. call:50:100,send:50:100,{PAUSED}")
    p.add_argument("--paused-sends", type=int, default=20_000, metavar="N",
                   help="sends offered to the paused peer before drops start, and again after "
                        "(default 20000)")
    p.add_argument("--paused-payload", type=int, default=10_000, metavar="BYTES",
                   help="payload of each of those sends (default 10000)")
    p.add_argument("--paused-hold", type=float, default=8.0, metavar="S",
                   help="then keep sending 100 per 10 ms for S seconds (default 8, which is "
                        "past the silent-link detection)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 1.0
        args.paused_sends = min(args.paused_sends, 10_000)
        args.paused_hold = min(args.paused_hold, 1.0)
    react_main(lambda _: main(args))


if __name__ == "__main__":
    cli()
