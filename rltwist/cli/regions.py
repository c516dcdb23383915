"""``rl-cluster region add --sid N``: start region N's nodes in a running ``rl-cluster up``.

The foreground ``rl-cluster up`` owns every process of its cluster (``rl-cluster down``
and Ctrl-C stop them through it), so ``region add`` does not start processes itself: it
drops a request file in ``<run-dir>/requests/`` and ``up`` — which looks there every half
second — starts ``map<N>``, ``guild<N>``, ``mail<N>`` and ``rolecity<N>`` on free ports
(added to the run's ``cluster.toml``, which the new processes read), waits until each
reports ready and master reports all four up, and writes its progress to a status file
that ``region add`` prints as it grows. Every wait is bounded. The nodes register with
master, which broadcasts them to every node; logiccenter records the region **closed** to
new players until an operator opens it (``POST /regions/<N>/open``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.logger import Logger

from rltwist.cluster.routing import MAX_SID
from rltwist.config import REGION_KINDS, START_ORDER
from rltwist.launcher import LaunchError

if TYPE_CHECKING:
    from rltwist.cli.cluster import Runner

log = Logger()

REQUESTS = "requests"
#: bound of one node's readiness, and of master reporting the region's nodes up (s)
NODE_READY_TIMEOUT = 60.0


def say(msg: str) -> None:
    print(msg, flush=True)


def region_names(sid: int) -> list[str]:
    """Region *sid*'s nodes in start order (map, guild, mail, rolecity)."""
    kinds = sorted(REGION_KINDS, key=START_ORDER.index)
    return [f"{kind}{sid}" for kind in kinds]


def _write_json(path: Path, data: Any) -> None:
    """Write *data* so a reader never sees half of it (a new file renamed over)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _request_path(run_dir: Path, sid: int) -> Path:
    return run_dir / REQUESTS / f"region-add-{sid}.json"


def _status_path(run_dir: Path, sid: int) -> Path:
    return run_dir / REQUESTS / f"region-add-{sid}.status.json"


# -- the `up` side ----------------------------------------------------------------------


def clear_requests(run_dir: Path) -> None:
    """At ``up``: forget requests and statuses a previous run left."""
    folder = run_dir / REQUESTS
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)


async def serve_requests(runner: Runner) -> None:
    """Run the region additions asked for since the last look, one after the other."""
    folder = runner.run_dir / REQUESTS
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("region-add-*.json")):
        if path.name.endswith(".status.json"):
            continue
        try:
            sid = int(json.loads(path.read_text())["sid"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            say(f"rl-cluster: ignoring the unreadable request {path.name}: {e}")
            path.unlink(missing_ok=True)
            continue
        path.unlink(missing_ok=True)
        await add_region(runner, sid)


async def add_region(runner: Runner, sid: int) -> bool:
    """Start region *sid*'s four nodes in *runner*'s cluster; progress in the status file
    (and on ``up``'s output). True once master reports all four up."""
    status_path = _status_path(runner.run_dir, sid)
    lines: list[str] = []

    def progress(line: str, state: str = "running", **extra: Any) -> None:
        lines.append(line)
        say(f"rl-cluster: region {sid}: {line}")
        _write_json(status_path, {"sid": sid, "state": state, "lines": lines, **extra})

    lc = runner.lc
    if lc is None or runner.stopping:
        progress("the cluster is not up (starting or stopping)", "failed")
        return False
    names = region_names(sid)
    ours = {n for n in names if n in lc.nodes and lc.nodes[n].running}
    if ours == set(names):
        running = [f"{n} (pid {lc.nodes[n].pid})" for n in names]
        progress(f"already running: {', '.join(running)}", "failed")
        return False
    try:
        states = await lc.node_states()
    except Exception as e:
        progress(f"master does not answer GET /nodes: {e}", "failed")
        return False
    foreign = {n: states[n] for n in names
               if n not in ours and states.get(n) in ("up", "waiting", "stopping")}
    if foreign:
        progress(f"master already has {foreign} (started by hand?): not starting a second "
                 "copy", "failed")
        return False
    if ours:  # a retry after a failed add: the nodes that did start are kept
        progress(f"already running, kept: {' '.join(sorted(ours, key=names.index))}")
    progress(f"starting {' '.join(n for n in names if n not in ours)} "
             f"(config {lc.config_path})")
    started = time.monotonic()
    try:
        for i, name in enumerate(names, 1):
            if name in ours:
                continue
            proc = lc.process(name)  # adds [nodes.<name>] on free ports to cluster.toml
            proc.start()
            runner.write_state()  # `down` knows the new PID from now on
            await proc.wait_ready(NODE_READY_TIMEOUT)
            n = lc.node_config(name)
            progress(f"[{i}/{len(names)}] {name} ready, pid {proc.pid}, "
                     f"{n['host']}:{n['port']}")
        await lc.wait_up(names, timeout=NODE_READY_TIMEOUT)
    except (LaunchError, OSError) as e:
        progress(f"failed: {e}", "failed")
        return False
    for name in names:
        if name not in runner.names:
            runner.names.append(name)
    runner.write_state()
    progress(f"master reports {', '.join(names)} up ({time.monotonic() - started:.1f}s); "
             f"the region is closed to new players until POST /regions/{sid}/open",
             "done", gm_url=lc.gm_url())
    return True


# -- the `region add` side ----------------------------------------------------------------


async def region_add(reactor: Any, run_dir: Path, sid: int, timeout: float) -> int:
    """``rl-cluster region add``: ask the ``up`` of *run_dir* to start region *sid* and
    print its progress; 0 once master reports the region's nodes up, 1 otherwise."""
    from rltwist.cli.cluster import STATE_FILE, _ours

    if not 0 < sid <= MAX_SID:
        say(f"rl-cluster: --sid must be 1..{MAX_SID}, got {sid}")
        return 1
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        say(f"rl-cluster: no cluster recorded in {run_dir} ({STATE_FILE} missing); start "
            "one with `rl-cluster up`")
        return 1
    state = json.loads(state_path.read_text())
    up_pid = state.get("up_pid")
    identities = state.get("identities", {})

    def up_alive() -> bool:
        return _ours(up_pid, identities.get(str(up_pid)))

    if not up_alive():
        say(f"rl-cluster: the `rl-cluster up` of {run_dir} (pid {up_pid}) is not running; "
            "region add needs it (it owns the cluster's processes)")
        return 1
    (run_dir / REQUESTS).mkdir(exist_ok=True)
    status_path = _status_path(run_dir, sid)
    status_path.unlink(missing_ok=True)
    _write_json(_request_path(run_dir, sid), {"sid": sid, "at": time.time()})
    say(f"rl-cluster: asked `rl-cluster up` (pid {up_pid}) to start region {sid}: "
        f"{' '.join(region_names(sid))}")
    shown = 0
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = {}
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            pass
        for line in status.get("lines", [])[shown:]:
            say(f"  {line}")
        shown = max(shown, len(status.get("lines", [])))
        if status.get("state") == "done":
            gm = status.get("gm_url", state.get("gm_url"))
            say(f"region {sid} added. Open it to new players:\n  curl -s -H "
                f"\"Authorization: Bearer $TOKEN\" -X POST {gm}/regions/{sid}/open")
            status_path.unlink(missing_ok=True)
            return 0
        if status.get("state") == "failed":
            say(f"rl-cluster: region {sid} was NOT added")
            status_path.unlink(missing_ok=True)
            return 1
        if not up_alive():
            say(f"rl-cluster: `rl-cluster up` (pid {up_pid}) exited before region {sid} "
                "was up")
            return 1
        if time.monotonic() > deadline:
            _request_path(run_dir, sid).unlink(missing_ok=True)  # not started later
            what = "did not start handling the request" if not status else \
                "did not report the region up"
            say(f"rl-cluster: `rl-cluster up` {what} within {timeout:g}s")
            return 1
        await task.deferLater(reactor, 0.2)
