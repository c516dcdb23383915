"""What a bot run measured: outcome counts, latency percentiles per step, failure reasons.

``Recorder`` is filled while bots run (cheap appends); ``Recorder.report()`` freezes it
into a ``BotReport`` that prints as a table and serialises to JSON.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from rltwist.stats import percentile

#: Steps shown first, in the order a bot runs them; scripted steps follow in script order.
STEP_ORDER = ("connect", "login", "gateway", "auth", "total")
STEP_HELP = {
    "connect": "TCP connect to a login node",
    "login": "Login request -> response",
    "gateway": "TCP connect to the role gateway",
    "auth": "Auth request -> response",
    "total": "first connect -> Auth OK, retries included",
}
#: Example messages kept per failure reason.
EXAMPLES_PER_REASON = 3


@attrs.frozen
class LatencyStats:
    """Latency of one step, in seconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples: Iterable[float]) -> LatencyStats:
        ordered = sorted(samples)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(count=len(ordered), p50=percentile(ordered, 50, ordered=True),
                   p95=percentile(ordered, 95, ordered=True),
                   p99=percentile(ordered, 99, ordered=True), max=ordered[-1],
                   mean=sum(ordered) / len(ordered))

    def to_dict(self) -> dict[str, Any]:
        ms = {k: round(getattr(self, k) * 1000.0, 3) for k in ("p50", "p95", "p99", "max", "mean")}
        return {"count": self.count, **{f"{k}_ms": v for k, v in ms.items()}}


@attrs.frozen
class FailureGroup:
    count: int
    examples: tuple[str, ...]


@attrs.frozen
class BotReport:
    """Result of a bot run (or a snapshot of one still running)."""

    count: int
    ok: int
    failed: int
    kicked: int
    #: Sessions logged in and not yet released when the report was taken.
    online: int
    #: RETRY_LATER / LOGIN_IN_PROGRESS answers that were retried.
    retries: int
    #: Bots that completed Login + Auth.
    logins: int
    #: Seconds from the first bot's start to the last completed Auth.
    login_window: float
    #: Seconds from the first bot's start to the report.
    elapsed: float
    latency: Mapping[str, LatencyStats]
    failures: Mapping[str, FailureGroup]
    kicks: Mapping[str, int]
    expect_kicks: bool
    openid_prefix: str
    #: True once every bot has finished (released, failed, kicked or cancelled).
    finished: bool
    interrupted: bool = False
    #: action -> bots whose lookup offered nothing to act on (the step ended there)
    nothing_to_do: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def logins_per_s(self) -> float:
        return self.logins / self.login_window if self.logins and self.login_window > 0 else 0.0

    @property
    def success(self) -> bool:
        """Every bot succeeded (kicks allowed only with ``expect_kicks``)."""
        return self.failed == 0 and (self.expect_kicks or self.kicked == 0)

    @property
    def exit_status(self) -> int:
        return 0 if self.success else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count, "ok": self.ok, "failed": self.failed, "kicked": self.kicked,
            "online": self.online, "retries": self.retries, "logins": self.logins,
            "login_window_s": round(self.login_window, 6),
            "logins_per_s": round(self.logins_per_s, 3),
            "elapsed_s": round(self.elapsed, 6),
            "latency": {step: s.to_dict() for step, s in self.latency.items()},
            "failures": {reason: {"count": g.count, "examples": list(g.examples)}
                         for reason, g in self.failures.items()},
            "kicks": dict(self.kicks),
            "expect_kicks": self.expect_kicks, "openid_prefix": self.openid_prefix,
            "finished": self.finished, "interrupted": self.interrupted,
            "success": self.success, "nothing_to_do": dict(self.nothing_to_do),
        }

    def format_table(self) -> str:
        """The human summary printed at the end of ``rl-bot``."""
        lines = [
            f"bots: {self.count}  ok: {self.ok}  failed: {self.failed}  kicked: {self.kicked}"
            + (" (expected)" if self.expect_kicks and self.kicked else "")
            + f"  retries: {self.retries}  openids: bot-{self.openid_prefix}-<i>"
            + ("  INTERRUPTED" if self.interrupted else ""),
            f"logins: {self.logins} in {self.login_window:.3f} s = "
            f"{self.logins_per_s:.1f} logins/s (login + auth); elapsed {self.elapsed:.3f} s",
        ]
        if self.online:
            lines.append(f"online: {self.online} sessions still held")
        if self.latency:
            lines.append("")
            lines.append(f"{'step':<18}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}"
                         f"{'p99 ms':>10}{'max ms':>10}")
            for step, s in self.latency.items():
                lines.append(f"{step:<18}{s.count:>8}{s.p50 * 1e3:>10.2f}{s.p95 * 1e3:>10.2f}"
                             f"{s.p99 * 1e3:>10.2f}{s.max * 1e3:>10.2f}")
        if self.nothing_to_do:
            lines.append("nothing to act on after the lookup (step ended there): " + ", ".join(
                f"{step} {n}" for step, n in sorted(self.nothing_to_do.items())))
        if self.failures:
            lines.append("")
            lines.append("failures by reason:")
            for reason, g in sorted(self.failures.items(), key=lambda kv: -kv[1].count):
                lines.append(f"{g.count:>8}  {reason}")
                lines.extend(f"{'':>10}e.g. {example}" for example in g.examples)
        if self.kicks:
            lines.append("")
            lines.append("kicks by reason" + (" (expected):" if self.expect_kicks else ":"))
            for reason, n in sorted(self.kicks.items(), key=lambda kv: -kv[1]):
                lines.append(f"{n:>8}  {reason}")
        return "\n".join(lines)


class Recorder:
    """Mutable tallies of a run, filled by the bots as they go."""

    def __init__(self, count: int, openid_prefix: str, expect_kicks: bool) -> None:
        self.count = count
        self.openid_prefix = openid_prefix
        self.expect_kicks = expect_kicks
        self.ok = 0
        self.failed = 0
        self.kicked = 0
        self.online = 0
        self.retries = 0
        self.logins = 0
        #: Bots that finished their login phase (logged in + script, or failed there).
        self.settled = 0
        self.started = 0
        self.first_start: float | None = None
        self.last_login: float | None = None
        self.interrupted = False
        self._samples: dict[str, array[float]] = {}
        self._failures: dict[str, list[Any]] = {}  # reason -> [count, examples]
        self.kicks: dict[str, int] = {}
        self.nothing_to_do: dict[str, int] = {}

    def sample(self, step: str, seconds: float) -> None:
        samples = self._samples.get(step)
        if samples is None:
            samples = self._samples[step] = array("d")
        samples.append(seconds)

    def failure(self, reason: str, example: str) -> None:
        entry = self._failures.get(reason)
        if entry is None:
            entry = self._failures[reason] = [0, []]
        entry[0] += 1
        if len(entry[1]) < EXAMPLES_PER_REASON:
            entry[1].append(example)

    def kick(self, reason: str) -> None:
        self.kicks[reason] = self.kicks.get(reason, 0) + 1

    @property
    def finished(self) -> int:
        return self.ok + self.failed + self.kicked

    def report(self, now: float) -> BotReport:
        first = self.first_start if self.first_start is not None else now
        window = (self.last_login - first) if self.last_login is not None else 0.0
        steps = [s for s in STEP_ORDER if s in self._samples]
        steps += [s for s in self._samples if s not in STEP_ORDER]
        return BotReport(
            count=self.count, ok=self.ok, failed=self.failed, kicked=self.kicked,
            online=self.online, retries=self.retries, logins=self.logins,
            login_window=window, elapsed=max(0.0, now - first),
            latency={s: LatencyStats.of(self._samples[s]) for s in steps},
            failures={r: FailureGroup(e[0], tuple(e[1])) for r, e in self._failures.items()},
            kicks=dict(self.kicks), expect_kicks=self.expect_kicks,
            openid_prefix=self.openid_prefix, finished=self.finished >= self.count,
            interrupted=self.interrupted, nothing_to_do=dict(self.nothing_to_do),
        )
