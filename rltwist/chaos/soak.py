"""``rl-chaos soak``: many players online for a long time; memory must stay flat.

``players`` clients log in over two role nodes (one region, two login nodes): all but
``active`` of them are ``rl-bot`` sessions that hold and heartbeat every 10 s (the swarm's
shared timer, so 10,000 sessions cost one timer); ``active`` (1 % by default) are chaos bots
that heartbeat every 2 s and rename themselves now and then. After the last login and a
warm-up, each node's RSS (``/proc/<pid>/status`` VmRSS) is the baseline; it is sampled every
10 s until the end. Passes when no bot failed or was kicked, every node's RSS grew at most
``MAX_GROWTH`` over its baseline, and heartbeats after the warm-up were answered with p99 at
most ``MAX_HEARTBEAT_P99``.

The heartbeats are timed by this process, which holds every bot session: its own garbage
collector's full passes over 10,000 sessions' objects (60-170 ms each, measured) would be
counted as server latency. So once the sessions are logged in, the driver freezes what it
holds (``gc.freeze()``: later passes skip those objects), and the report gives the driver's
own collector pauses during the measurement next to the heartbeat figures, so a slow
instrument shows as such.
"""

from __future__ import annotations

import gc
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from rltwist.bot import BotOptions
from rltwist.bot.report import percentile
from rltwist.bot.swarm import BotSwarm
from rltwist.chaos.bots import DEV_SDK_SECRET, ChaosBot, Env
from rltwist.chaos.harness import Harness
from rltwist.chaos.ledger import Ledger

MAX_GROWTH = 0.05
DRIVER_PAUSE = 0.010
"""Driver collector passes longer than this are counted in the report."""
MAX_HEARTBEAT_P99 = 0.050
SAMPLE_EVERY = 10.0


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Soak:
    def __init__(self, reactor: Any, run_dir: Path, *, players: int, minutes: float,
                 active: float = 0.01, warmup: float | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.reactor = reactor
        self.say = say
        self.players = players
        self.seconds = minutes * 60
        self.active = max(1, round(players * active)) if active > 0 else 0
        self.warmup = warmup if warmup is not None else max(30.0, self.seconds / 10)
        self.h = Harness(reactor, run_dir, regions=1, roles=2, logins=2, say=say,
                         overrides={"role": {"heartbeat_timeout": 60.0},
                                    # etc/cluster.toml's heartbeats, not the chaos run's
                                    # faster ones: a login storm delays them
                                    "cluster": {"heartbeat_interval": 1.0,
                                                "heartbeat_misses": 3}})

    def sleep(self, s: float) -> defer.Deferred[None]:
        return task.deferLater(self.reactor, s)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        h = self.h
        self.say(f"rl-chaos soak: {self.players} players ({self.active} active) for "
                 f"{self.seconds / 60:g} min, warm-up {self.warmup:g}s; starting "
                 f"{len(h.names)} nodes")
        await h.start()
        idle_n = self.players - self.active
        swarm = BotSwarm(BotOptions(logins=h.logins(), count=idle_n,
                                    dev_sdk_secret=DEV_SDK_SECRET, hold=None, heartbeat=10.0,
                                    timeout=10.0, concurrency=200, retries=20),
                         reactor=self.reactor)
        env = Env(self.reactor, h.logins(), h.role_by_port(), Ledger(), tick=2.0,
                  timeout=10.0, rename_p=0.25)
        token = secrets.token_hex(3)
        active = [ChaosBot(env, i, f"soak-{token}-{i}", 1) for i in range(self.active)]
        samples: dict[str, list[tuple[float, int]]] = {}
        pauses = GcPauses()
        try:
            t = time.monotonic()
            for b in active:
                b.start()
            report = await swarm.login()
            login_s = time.monotonic() - t
            self.say(f"  {report.logins}/{idle_n} idle sessions logged in in {login_s:.1f}s "
                     f"({report.logins_per_s:.0f}/s), {sum(b.online for b in active)}/"
                     f"{len(active)} active online; failed {report.failed}")
            gc.collect()
            gc.freeze()  # the sessions' objects: this process's later GC passes skip them
            await self.sleep(self.warmup)
            pauses.start()
            pids = h.pids()
            hb_from = len(swarm.recorder._samples.get("heartbeat", ()))
            baseline = {n: rss_kib(p) for n, p in pids.items()}
            errors_before = sum(env.errors.values())
            self.say(f"  warm-up done; RSS baseline (MiB): "
                     f"{ {n: round(v / 1024, 1) for n, v in baseline.items()} }")
            end = time.monotonic() + max(0.0, self.seconds - self.warmup)
            while time.monotonic() < end:
                await self.sleep(min(SAMPLE_EVERY, max(0.0, end - time.monotonic())))
                now = time.monotonic() - started
                for n, p in pids.items():
                    samples.setdefault(n, []).append((round(now, 1), rss_kib(p)))
            pauses.stop()
            final = {n: s[-1][1] for n, s in samples.items()} if samples else baseline
            hb = sorted(swarm.recorder._samples.get("heartbeat", ())[hb_from:])
            snap = swarm.snapshot()
        finally:
            pauses.stop()
            gc.unfreeze()
            env.stopping = True
            for b in active:
                b.stop()
            release = defer.Deferred.fromCoroutine(swarm.release())
            waits: list[defer.Deferred[Any]] = [release, *(b.done for b in active if b.done)]
            await defer.DeferredList(waits)
            await h.stop()
        growth = {n: round(final[n] / baseline[n] - 1, 4) if baseline[n] > 0 else None
                  for n in baseline}
        p99 = percentile(hb, 99) if hb else None
        failures = []
        if snap.failed or snap.kicked:
            failures.append(f"idle bots failed {snap.failed}, kicked {snap.kicked}: "
                            f"{ {k: g.count for k, g in snap.failures.items()} }")
        active_errors = sum(env.errors.values())
        if active_errors:
            failures.append(f"active bots' errors: {dict(env.errors)}")
        grown = {n: g for n, g in growth.items() if g is None or g > MAX_GROWTH}
        if grown:
            failures.append(f"RSS grew more than {MAX_GROWTH:.0%}: {grown}")
        if p99 is None or p99 > MAX_HEARTBEAT_P99:
            failures.append(f"heartbeat p99 {p99} s over {MAX_HEARTBEAT_P99} s")
        return {
            "players": self.players, "active": self.active, "minutes": self.seconds / 60,
            "warmup_s": self.warmup, "login_s": round(login_s, 1),
            "logins_per_s": round(report.logins_per_s, 1),
            "errors": snap.failed + active_errors, "kicked": snap.kicked,
            "errors_after_warmup": active_errors - errors_before,
            "renames": sum(b.renames for b in active),
            "heartbeats_after_warmup": len(hb),
            "heartbeat_ms": {"p50": ms(percentile(hb, 50)) if hb else None,
                             "p99": ms(p99), "max": ms(hb[-1]) if hb else None},
            "driver_gc": pauses.to_dict(),
            "rss_kib": {"baseline": baseline, "final": final},
            "rss_growth": growth, "rss_samples": samples,
            "failures": failures, "seconds": round(time.monotonic() - started, 1),
            "cluster": self.h.describe(),
        }


class GcPauses:
    """This process's garbage-collector pauses while started (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def to_dict(self) -> dict[str, Any]:
        p = self.pauses
        return {"passes": len(p), "max_ms": ms(max(p)) if p else 0.0,
                f"over_{DRIVER_PAUSE * 1000:g}ms": sum(1 for x in p if x > DRIVER_PAUSE)}


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{'node':<12} {'RSS base MiB':>12} {'RSS end MiB':>12} {'growth':>8}",
             "-" * 47]
    for n, base in r["rss_kib"]["baseline"].items():
        end = r["rss_kib"]["final"].get(n, -1)
        g = r["rss_growth"].get(n)
        lines.append(f"{n:<12} {base / 1024:>12.1f} {end / 1024:>12.1f} "
                     f"{'-' if g is None else f'{g:+.1%}':>8}")
    hb = r["heartbeat_ms"]
    lines.append("")
    lines.append(f"{r['players']} players ({r['active']} active, {r['renames']} renames) for "
                 f"{r['minutes']:g} min; logins {r['login_s']}s ({r['logins_per_s']}/s); "
                 f"heartbeats after warm-up {r['heartbeats_after_warmup']}: p50 {hb['p50']} ms, "
                 f"p99 {hb['p99']} ms, max {hb['max']} ms; errors {r['errors']}, kicked "
                 f"{r['kicked']}")
    g = r.get("driver_gc")
    if g:
        lines.append(f"the driver's own GC during the measurement (its sessions frozen): "
                     f"{g['passes']} passes, max {g['max_ms']} ms, "
                     f"{g[f'over_{DRIVER_PAUSE * 1000:g}ms']} over {DRIVER_PAUSE * 1000:g} ms")
    lines.append("FAILED: " + "; ".join(r["failures"]) if r["failures"] else "all checks passed")
    return "\n".join(lines)


def write_json(path: str, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
