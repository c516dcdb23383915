"""rl-merge: merge region *from* into region *into*.

    rl-merge --from 2 --into 1 [--dry-run] [--config etc/cluster.toml] [--json report.json]
             [--copy-unknown] [--storage-timeout S] [--quiet]

Run it while master runs and the nodes of both regions are stopped. It refuses (exit 1,
nothing written) unless master reports every map/guild/mail/rolecity node of both regions
``stopped``, ``down`` or never registered, logins are closed, and no role node serves a
player of either region. Then it merges on storage (``rltwist.merge.core``: the config's
``[storage]``, embedded or MongoDB), printing a progress bar per collection, asks master to
install the routing alias ``{from: into}`` (``POST /regions/aliases``) and prints the report.
``--dry-run`` checks, plans and prints the report without writing anything (and without
refusing: the checks are printed as warnings). A merge interrupted at any point (a crash,
``kill -9``, storage down) is finished by running the same command again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from twisted.internet import defer

from rltwist.cli import react_main
from rltwist.cluster.routing import MAX_SID, birth_region
from rltwist.config import REGION_KINDS, Config, ConfigError, default_config_path, load_config
from rltwist.merge.core import CHAT_HISTORY, Merger, MergeRefused, Report
from rltwist.merge.world import world_placer
from rltwist.net import read_body
from rltwist.storage import Backend, StorageSettings, open_backend

GM_TIMEOUT = 10.0
GM_MAX_BODY = 16 * 1024 * 1024
BAR = 24


class Refused(Exception):
    """A precondition does not hold: the message says which and what to do."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rl-merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="from_sid", type=int, required=True,
                   help="the region merged away (its players move)")
    p.add_argument("--into", dest="into_sid", type=int, required=True,
                   help="the region that receives them (its players keep their names)")
    p.add_argument("--dry-run", action="store_true", help="check and plan; write nothing")
    p.add_argument("--config", default=None, help="cluster config (default: etc/cluster.toml)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--storage-timeout", type=float, default=120.0,
                   help="bound of one storage operation (s; a whole collection is read at "
                        "once)")
    p.add_argument("--copy-unknown", action="store_true",
                   help="copy collections this version has no merge rule for unchanged "
                        "(otherwise their presence refuses the merge)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for sid in (args.from_sid, args.into_sid):
        if not 0 < sid <= MAX_SID:
            p.error(f"region ids are 1..{MAX_SID}, not {sid}")
    if args.from_sid == args.into_sid:
        p.error("--from and --into must differ")
    return args


class Master:
    """The GM API of the config's master (bounded requests)."""

    def __init__(self, config: Config, reactor: Any) -> None:
        m = config.master
        self.url = f"http://{m.gm_host}:{m.gm_port}"
        self.token = m.gm_token
        self.reactor = reactor

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import treq

        async def go() -> tuple[int, Any]:
            headers: dict[bytes | str, list[bytes | str]] = {
                "Authorization": [f"Bearer {self.token}"]}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = ["application/json"]
            r = await treq.request(method, self.url + path, headers=headers, data=data,
                                   persistent=False)
            raw = await read_body(r, GM_MAX_BODY)
            try:
                return r.code, json.loads(raw)
            except ValueError:
                return r.code, raw.decode(errors="replace")

        try:
            return await defer.Deferred.fromCoroutine(go()).addTimeout(GM_TIMEOUT,
                                                                       self.reactor)
        except Exception as e:
            raise Refused(f"cannot reach master's GM API at {self.url} ({e!r}): rl-merge "
                          "asks master whether the regions are stopped and installs the "
                          "routing alias; start master (it runs without the regions)") from e


async def check_stopped(master: Master, sids: tuple[int, int]) -> list[str]:
    """Problems that forbid a merge now (empty: none)."""
    problems: list[str] = []
    status, body = await master.request("GET", "/nodes")
    if status != 200:
        raise Refused(f"GET /nodes answered {status}: {body}")
    running = sorted(f"{n['name']} ({n['state']})" for n in body["nodes"]
                     if n["kind"] in REGION_KINDS and n.get("sid") in sids
                     and n["state"] not in ("down", "stopped"))
    if running:
        problems.append(f"nodes of regions {sids[0]} and {sids[1]} are running: "
                        f"{', '.join(running)}; stop them (SIGTERM) first")
    # logins: the per-region state (GET /regions: new players) where the cluster has it,
    # else the cluster-wide switch. Existing players of a closed region may still log in:
    # the online check below catches them, and the fence refuses a login that races it
    rstatus, regions = await master.request("GET", "/regions")
    known: dict[int, bool] = {}
    if rstatus == 200 and isinstance(regions, dict) and isinstance(regions.get("regions"),
                                                                    list):
        for r in regions["regions"]:
            if isinstance(r, dict) and r.get("sid") in sids:
                if isinstance(r.get("open"), bool):
                    known[r["sid"]] = r["open"]
                elif isinstance(r.get("state"), str):
                    known[r["sid"]] = r["state"] == "open"
    for sid in sids:
        if known.get(sid):
            problems.append(f"region {sid} is open to new players: POST "
                            f"/regions/{sid}/close first")
    unknown = [sid for sid in sids if sid not in known]
    if unknown and body.get("login_open", True):
        problems.append(f"logins are open (no per-region login state for region(s) "
                        f"{unknown}: GET /regions answered {rstatus}): POST /login/close "
                        "first")
    # nobody of either region may be online: their role node would save over the merge
    for node in body["nodes"]:
        if node["kind"] != "role" or node["state"] != "up":
            continue
        cstatus, answer = await master.request("POST", "/call", {
            "node": node["name"], "service": "gateway", "method": "online_players",
            "args": []})
        if cstatus != 200:
            problems.append(f"cannot ask {node['name']} for its players (HTTP {cstatus}: "
                            f"{answer}); a role node must be stopped or answer")
            continue
        online = [u for u in answer["result"] if birth_region(u) in sids]
        if online:
            problems.append(f"{node['name']} serves {len(online)} players of regions "
                            f"{sids[0]}/{sids[1]} (e.g. {online[:3]}): wait for them to log "
                            "out or kick them")
    return problems


def chat_history(config: Config) -> int:
    """``history`` of the chat table the nodes read (messages a channel keeps)."""
    import tomllib

    path = os.path.join(config.hotreload.root, "etc", "game", "chat.toml")
    try:
        with open(path, "rb") as f:
            return int(tomllib.load(f).get("history", CHAT_HISTORY))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return CHAT_HISTORY


def open_db(config: Config, name: str, timeout: float) -> Backend:
    s = config.storage
    return open_backend(StorageSettings(
        backend=s.backend, db_name=name, data_dir=s.path, mongo_uri=s.mongo_uri,
        timeout=timeout, synchronous=s.synchronous, write_concern=s.write_concern))


class ProgressBar:
    """One bar per (step, collection) on stderr: redrawn in place on a terminal, one line
    per finished collection otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.current: tuple[str, str] | None = None

    def __call__(self, step: str, coll: str, done: int, total: int) -> None:
        if self.quiet or step == "plan":
            return
        filled = BAR if total == 0 else BAR * done // total
        line = (f"{step:<7}{coll:<16}[{'#' * filled}{'.' * (BAR - filled)}] "
                f"{done:>7}/{total}")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def render(report: Report) -> str:
    j = report.to_json()
    lines = [
        f"merge of region {j['from']} into region {j['into']}"
        + (" (dry run: nothing written)" if j["dry_run"] else ""),
        f"  step reached      {j['step']}"
        + (f" (resumed after {j['resumed_from']})" if j["resumed_from"] else ""),
        f"  players           {j['players']}",
        f"  guilds            {j['guilds']}",
        f"  mailboxes         {j['mailboxes']} ({j['mails']} mails)",
        f"  renamed players   {len(j['renamed_players'])}",
        f"  renamed guilds    {len(j['renamed_guilds'])}",
        f"  notice mails      {j['notices']}" + ("" if not j["dry_run"] else " (none sent)"),
        f"  cities moved      {j['cities_moved']} (players whose map changes: "
        f"{j['mapid_players']}; not copied: "
        + (", ".join(f"{n} {k}" for k, n in sorted(j["world_dropped"].items())) or "none")
        + ")",
        f"  seconds           {j['seconds']} ("
        + ", ".join(f"{k} {v}" for k, v in j["step_seconds"].items()) + ")",
        "  documents         " + ", ".join(f"{c} {n}" for c, n in
                                           sorted(j["collections"].items())),
    ]
    if j["dropped_stale_names"]:
        lines.append("  stale name keys   " + ", ".join(j["dropped_stale_names"][:20])
                     + " (not copied: not their owner's name)")
    if j["copied_without_rule"]:
        lines.append("  copied unchanged  " + ", ".join(j["copied_without_rule"]))
    for x in j["renamed_players"][:20]:
        lines.append(f"    player {x['userid']}: {x['old']!r} -> {x['new']!r}")
    if len(j["renamed_players"]) > 20:
        lines.append(f"    ... {len(j['renamed_players']) - 20} more (--json has them all)")
    for x in j["renamed_guilds"][:20]:
        lines.append(f"    guild {x['guildid']}: {x['old']!r} -> {x['new']!r}")
    return "\n".join(lines)


async def run(reactor: Any, argv: list[str] | None = None) -> int:
    """The command (``argv`` without the program name); returns the exit status."""
    args = parse_args(argv)
    try:
        config = load_config(args.config or default_config_path())
    except ConfigError as e:
        print(f"rl-merge: {e}", file=sys.stderr)
        return 1
    sids = (args.from_sid, args.into_sid)
    master = Master(config, reactor)
    try:
        problems = await check_stopped(master, sids)
    except Refused as e:
        print(f"rl-merge: refused: {e}", file=sys.stderr)
        return 1
    if problems and not args.dry_run:
        print("rl-merge: refused (nothing written):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"rl-merge: warning (a real run would refuse): {p}", file=sys.stderr)
    if config.storage.backend == "embedded":
        path = os.path.join(config.storage.path, f"region{args.from_sid}.sqlite3")
        if not os.path.exists(path):
            print(f"rl-merge: refused: no database of region {args.from_sid} at {path} "
                  "(storage.path is relative to the directory rl-merge runs in, as for "
                  "the nodes)", file=sys.stderr)
            return 1
    dbs = [open_db(config, n, args.storage_timeout)
           for n in (f"region{args.from_sid}", f"region{args.into_sid}", "roledb")]

    async def alias(merged: int, target: int) -> None:
        status, body = await master.request("POST", "/regions/aliases",
                                            {"from": merged, "into": target})
        if status != 200:
            raise MergeRefused(f"the data is merged but master did not install the alias "
                               f"(HTTP {status}: {body}); run the same rl-merge again")

    try:
        report = await Merger(dbs[0], dbs[1], dbs[2], args.from_sid, args.into_sid, alias=alias,
                              progress=ProgressBar(args.quiet),
                              copy_unknown=args.copy_unknown,
                              placer=world_placer(config, args.into_sid),
                              chat_history=chat_history(config)).run(dry_run=args.dry_run)
    except (MergeRefused, Refused) as e:
        print(f"rl-merge: refused: {e}", file=sys.stderr)
        return 1
    finally:
        for db in dbs:
            await db.close()
    print(render(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=2, sort_keys=True)
    if not args.dry_run:
        print(f"next: start the nodes of region {args.into_sid}, then decommission region "
              f"{args.from_sid}'s: DELETE /nodes/map{args.from_sid} (and guild, mail, "
              "rolecity), and remove them from the config")
    return 0


def main() -> None:
    """Console entry point."""
    react_main(lambda reactor: run(reactor, sys.argv[1:]))
