#!/usr/bin/env python3
"""Write the Grafana dashboards of etc/grafana/dashboards/ from the panel lists below.

    python tools/gen_dashboards.py           # rewrite etc/grafana/dashboards/*.json
    python tools/gen_dashboards.py --check   # exit 1 if a committed file is stale

The panels are kept here as (title, kind, PromQL, legend) so that the queries are easy to
review and the JSON stays uniform. tests/test_monitoring.py runs every panel's query
against a real Prometheus scraping a real cluster, and checks that the committed JSON is
what this script writes.

Template variables: ``$region`` (birth regions, from ``rl_role_online_players_by_region``;
it also filters region nodes through their ``sid`` target label) and ``$node`` (every
scraped node). Both are multi-valued with "All" = ``.*``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "etc" / "grafana" / "dashboards"
#: the datasource uid that etc/grafana/provisioning/datasources/rltwist.yml provisions
DATASOURCE = {"type": "prometheus", "uid": "rltwist-prometheus"}
RATE = "$__rate_interval"

# (title, kind, expr, legend, unit); kind: stat, timeseries, table
Panel = tuple[str, str, str, str, str]

OVERVIEW: list[Panel] = [
    ("Nodes up", "stat", "sum(rl_node_up)", "up", "none"),
    ("Nodes down", "stat", "count(rl_node_up == 0) or vector(0)", "down", "none"),
    ("Scrape targets down", "stat", 'count(up{job="rltwist"} == 0) or vector(0)', "down",
     "none"),
    ("Players online", "stat", "sum(rl_role_online_players)", "online", "none"),
    ("Logins open", "stat", "min(rl_login_open)", "open", "bool_yes_no"),
    ("Redis is_available", "stat", "min(rl_redis_available)", "available", "bool_yes_no"),
    ("Alerts firing", "stat", 'count(ALERTS{alertstate="firing"}) or vector(0)', "firing",
     "none"),
    ("Node table (1 = heartbeating, 0 = down)", "table",
     "max by (node, kind, sid) (rl_node_up)", "{{node}}", "none"),
    ("Online players by birth region", "timeseries",
     'sum by (region) (rl_role_online_players_by_region{region=~"$region"})',
     "region {{region}}", "none"),
    ("Online players by role node", "timeseries",
     'sum by (node) (rl_role_online_players{node=~"$node"})', "{{node}}", "none"),
    ("Logins/s by result", "timeseries",
     f'sum by (outcome) (rate(rl_login_total{{node=~"$node"}}[{RATE}]))', "{{outcome}}",
     "reqps"),
    ("Auths/s by result", "timeseries",
     f'sum by (outcome) (rate(rl_role_auth_total{{node=~"$node"}}[{RATE}]))', "{{outcome}}",
     "reqps"),
    ("Login server-error ratio (INTERNAL, RETRY_LATER, TIMEOUT)", "timeseries",
     f'sum(rate(rl_login_total{{outcome=~"INTERNAL|RETRY_LATER|TIMEOUT"}}[{RATE}])) / '
     f"clamp_min(sum(rate(rl_login_total[{RATE}])), 1e-9)", "error ratio", "percentunit"),
    ("Login and Auth p99", "timeseries",
     f'label_replace(histogram_quantile(0.99, sum by (le) '
     f'(rate(rl_login_seconds_bucket[{RATE}]))), "flow", "login", "", "") or '
     f'label_replace(histogram_quantile(0.99, sum by (le) '
     f'(rate(rl_role_auth_seconds_bucket[{RATE}]))), "flow", "auth", "", "")',
     "{{flow}}", "s"),
    ("Login step p99", "timeseries",
     f"histogram_quantile(0.99, sum by (le, step) (rate(rl_login_step_seconds_bucket[{RATE}])))",
     "{{step}}", "s"),
    ("Auth step p99", "timeseries",
     f"histogram_quantile(0.99, sum by (le, step) "
     f"(rate(rl_role_auth_step_seconds_bucket[{RATE}])))", "{{step}}", "s"),
    ("Kicks/s by reason", "timeseries",
     f"sum by (reason) (rate(rl_role_kicks_total[{RATE}]))", "{{reason}}", "ops"),
    ("Logouts/s by reason", "timeseries",
     f"sum by (reason) (rate(rl_role_logouts_total[{RATE}]))", "{{reason}}", "ops"),
    ("Client connections by node", "timeseries",
     'sum by (node) (rl_client_connections{node=~"$node"})', "{{node}}", "none"),
    ("Client connections refused or closed by the server/s", "timeseries",
     f'sum by (reason) (rate(rl_client_refused_total{{node=~"$node"}}[{RATE}])) or '
     f'sum by (reason) (rate(rl_client_closes_total{{node=~"$node"}}[{RATE}]))',
     "{{reason}}", "ops"),
    ("Cluster call errors/s by kind", "timeseries",
     f'sum by (kind) (rate(rl_cluster_errors_total{{node=~"$node"}}[{RATE}]))', "{{kind}}",
     "ops"),
]

PER_NODE: list[Panel] = [
    ("CPU (cores)", "timeseries",
     f'rate(process_cpu_seconds_total{{node=~"$node"}}[{RATE}])', "{{node}}", "none"),
    ("Resident memory", "timeseries", 'process_resident_memory_bytes{node=~"$node"}',
     "{{node}}", "bytes"),
    ("Open file descriptors", "timeseries", 'process_open_fds{node=~"$node"}', "{{node}}",
     "none"),
    ("Uptime", "table", 'time() - process_start_time_seconds{node=~"$node"}', "{{node}}",
     "s"),
    ("Writes allowed (0 = lost master)", "timeseries",
     'rl_node_writes_allowed{node=~"$node"}', "{{node}}", "none"),
    ("Calls received/s by service", "timeseries",
     f'sum by (node, service) (rate(rl_cluster_calls_in_total{{node=~"$node"}}[{RATE}]))',
     "{{node}} {{service}}", "reqps"),
    ("Calls made/s by service", "timeseries",
     f'sum by (node, service) (rate(rl_cluster_calls_out_total{{node=~"$node"}}[{RATE}]))',
     "{{node}} -> {{service}}", "reqps"),
    ("Call p99 by peer (30-60 s window)", "timeseries",
     'rl_cluster_peer_call_p99_seconds{node=~"$node"}', "{{node}} -> {{peer}}", "s"),
    ("Call p99 by method (outgoing)", "timeseries",
     f"histogram_quantile(0.99, sum by (le, node, service, method) "
     f'(rate(rl_cluster_call_seconds_bucket{{node=~"$node"}}[{RATE}])))',
     "{{node}} {{service}}.{{method}}", "s"),
    ("Links (1 = ready)", "timeseries", 'min by (node, peer) (rl_cluster_link_up{node=~"$node"})',
     "{{node}} -> {{peer}}", "none"),
    ("Calls awaiting a reply", "timeseries",
     'rl_cluster_pending_calls_all_peers{node=~"$node"}', "{{node}}", "none"),
    ("Bytes waiting to be sent", "timeseries",
     'rl_cluster_outbound_bytes_all_peers{node=~"$node"}', "{{node}}", "bytes"),
    ("Sends dropped or lost/s", "timeseries",
     f'sum by (node) (rate(rl_cluster_sends_dropped_total{{node=~"$node"}}[{RATE}])) or '
     f'sum by (node) (rate(rl_cluster_sends_lost_total{{node=~"$node"}}[{RATE}])) or '
     f'sum by (node) (0 * rl_cluster_pending_calls_all_peers{{node=~"$node"}})',
     "{{node}}", "ops"),
    ("Redis round trip p99 by command", "timeseries",
     f"histogram_quantile(0.99, sum by (le, node, command) "
     f'(rate(rl_redis_command_seconds_bucket{{node=~"$node"}}[{RATE}])))',
     "{{node}} {{command}}", "s"),
]

STORAGE: list[Panel] = [
    ("Entities saved/s by saver", "timeseries",
     f'sum by (node, saver) (rate(rl_saver_saved_total{{node=~"$node", sid=~"$region"}}'
     f"[{RATE}]))", "{{node}} {{saver}}", "ops"),
    ("Save failures/s", "timeseries",
     f'sum by (node, saver) (rate(rl_saver_failures_total{{node=~"$node", sid=~"$region"}}'
     f"[{RATE}]))", "{{node}} {{saver}}", "ops"),
    ("Final (logout) save retries/s", "timeseries",
     f'sum by (node) (rate(rl_role_final_save_retries_total{{node=~"$node"}}[{RATE}]))',
     "{{node}}", "ops"),
    ("Saves refused by fencing/s (an older instance wrote)", "timeseries",
     f'sum by (node, saver) (rate(rl_saver_stale_total{{node=~"$node", sid=~"$region"}}'
     f"[{RATE}]))", "{{node}} {{saver}}", "ops"),
    ("Player writes refused by fencing/s", "timeseries",
     f'sum by (node, what) (rate(rl_fence_refused_total{{node=~"$node", sid=~"$region"}}'
     f"[{RATE}]))", "{{node}} {{what}}", "ops"),
    ("Save batch p99", "timeseries",
     f"histogram_quantile(0.99, sum by (le, node, saver) "
     f'(rate(rl_saver_batch_seconds_bucket{{node=~"$node", sid=~"$region"}}[{RATE}])))',
     "{{node}} {{saver}}", "s"),
    ("LRU entities in memory", "timeseries",
     'sum by (node, service) (rl_lru_resident{node=~"$node", sid=~"$region"})',
     "{{node}} {{service}}", "none"),
    ("LRU evictions/s", "timeseries",
     f'sum by (node) (rate(rl_lru_evictions_total{{node=~"$node", sid=~"$region"}}[{RATE}]))',
     "{{node}}", "ops"),
    ("LRU evictions given up/s (save failed)", "timeseries",
     f"sum by (node) (rate(rl_lru_eviction_failures_total"
     f'{{node=~"$node", sid=~"$region"}}[{RATE}]))', "{{node}}", "ops"),
    ("LRU loads/s by result", "timeseries",
     f'sum by (node, result) (rate(rl_lru_loads_total{{node=~"$node", sid=~"$region"}}'
     f"[{RATE}]))", "{{node}} {{result}}", "ops"),
    ("LRU load p99", "timeseries",
     f"histogram_quantile(0.99, sum by (le, node) "
     f'(rate(rl_lru_load_seconds_bucket{{node=~"$node", sid=~"$region"}}[{RATE}])))',
     "{{node}}", "s"),
    ("Redis round trip p99 by command (all nodes)", "timeseries",
     f"histogram_quantile(0.99, sum by (le, command) "
     f"(rate(rl_redis_command_seconds_bucket[{RATE}])))", "{{command}}", "s"),
    ("Redis failures/s by kind", "timeseries",
     f"sum by (kind) (rate(rl_redis_errors_total[{RATE}]))", "{{kind}}", "ops"),
]

HOT_RELOAD: list[Panel] = [
    ("Code versions in the cluster", "stat", "count(count by (code_version) (rl_node_info))",
     "versions", "none"),
    ("Game table digests in the cluster", "stat",
     "count(count by (config_digest) (rl_node_info))", "digests", "none"),
    ("Versions per node", "table",
     'max by (node, kind, code_version, config_version) (rl_node_info{node=~"$node"})',
     "{{node}}", "none"),
    ("Fix lists handled, by result", "timeseries",
     'sum by (result) (rl_hotfix_lists_total{node=~"$node"})', "{{result}}", "none"),
    ("Fix lists rejected (per node, unrepaired)", "timeseries",
     'rl_hotfix_rejected_lists{node=~"$node"}', "{{node}}", "none"),
    ("Fix lists waiting for their files", "timeseries",
     'rl_hotfix_pending_lists{node=~"$node"}', "{{node}}", "none"),
    ("Table reloads, by result", "timeseries",
     'sum by (result) (rl_config_reloads_total{node=~"$node"})', "{{result}}", "none"),
    ("Last table reload rejected (per node)", "timeseries",
     'rl_config_reload_failing{node=~"$node"}', "{{node}}", "none"),
]

DASHBOARDS = {
    "rltwist-overview": ("rltwist: cluster overview", OVERVIEW),
    "rltwist-node": ("rltwist: per node", PER_NODE),
    "rltwist-storage": ("rltwist: storage", STORAGE),
    "rltwist-hotreload": ("rltwist: hot reload", HOT_RELOAD),
}


def variables() -> list[dict[str, Any]]:
    """The ``region`` and ``node`` template variables (multi-value, All = .*)."""
    out = []
    for name, label, query in (
            ("region", "Region (sid)",
             "label_values(rl_role_online_players_by_region, region)"),
            ("node", "Node", 'label_values(up{job="rltwist"}, node)')):
        out.append({
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 3, "hide": 0, "options": [],
        })
    return out


def panel(index: int, spec: Panel) -> dict[str, Any]:
    title, kind, expr, legend, unit = spec
    width, height = {"stat": (4, 4), "table": (12, 8), "timeseries": (12, 8)}[kind]
    p: dict[str, Any] = {
        "id": index + 1, "title": title, "type": kind, "datasource": DATASOURCE,
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend, "instant": kind != "timeseries",
                     "range": kind == "timeseries"}],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "options": {},
    }
    if kind == "table":
        p["transformations"] = [{"id": "labelsToFields", "options": {}}]
    return p


def layout(panels: list[dict[str, Any]]) -> None:
    """Place panels left to right, top to bottom (Grafana keeps gridPos as given)."""
    x = y = row_h = 0
    for p in panels:
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])


def dashboard(uid: str, title: str, specs: list[Panel]) -> dict[str, Any]:
    panels = [panel(i, s) for i, s in enumerate(specs)]
    layout(panels)
    return {
        "uid": uid, "title": title, "tags": ["rltwist"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "links": [{"title": "rltwist dashboards", "type": "dashboards", "tags": ["rltwist"],
                   "asDropdown": True, "includeVars": True, "keepTime": True}],
        "panels": panels,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard(uid, title, specs), indent=2) + "\n"
            for uid, (title, specs) in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = p.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python tools/gen_dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
