"""The cluster config refuses what it does not know (issue 11 item 12b), types every section
it has, and a node refuses development secrets on a reachable address (item 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from rltwist.config import (
    DEV_CLUSTER_SECRET,
    DEV_GM_TOKEN,
    DEV_SDK_SECRET,
    ConfigError,
    LruSettings,
    config_from_dict,
    insecure_defaults,
    is_loopback,
)
from rltwist.launcher import TWISTD, free_ports, render_config


def base(**sections: Any) -> dict[str, Any]:
    """A valid config mapping with master and map1, plus *sections* merged in."""
    data: dict[str, Any] = {
        "cluster": {"secret": "a-secret-of-ours"},
        "master": {"gm_token": "a-token-of-ours"},
        "nodes": {"master": {"port": 7000, "metrics_port": 9000},
                  "map1": {"port": 7011, "metrics_port": 9011},
                  "login1": {"port": 7301, "metrics_port": 9301, "client_port": 7401}},
    }
    for name, table in sections.items():
        if isinstance(table, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **table}
        else:
            data[name] = table
    return data


class UnknownKeys(unittest.TestCase):
    def error(self, data: dict[str, Any]) -> str:
        with self.assertRaises(ConfigError) as cm:
            config_from_dict(data, "etc/x.toml")
        message = str(cm.exception)
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertTrue(message.startswith("etc/x.toml: "), message)
        return message

    def test_a_typo_in_a_key_names_the_key_and_what_was_meant(self) -> None:
        message = self.error(base(cluster={"secret": "a-secret-of-ours",
                                           "heartbeat_intreval": 2.0}))
        self.assertIn("cluster.heartbeat_intreval: unknown key (did you mean "
                      "heartbeat_interval?)", message)

    def test_unknown_keys_in_every_table_are_named(self) -> None:
        data = base(redis={"timout": 1.0}, storage={"bakend": "embedded"},
                    login={"handlerz": 2}, role={"agents": 2, "x": 1},
                    master={"gm_token": "a-token-of-ours", "gm_hots": "127.0.0.1"},
                    hotreload={"rot": ".."}, hotfix={"packages": []})
        data["nodes"]["map1"]["client_port"] = 7402  # client ports are for role and login
        message = self.error(data)
        for key in ("redis.timout", "storage.bakend", "login.handlerz", "role.x",
                    "master.gm_hots", "hotreload.rot", "hotfix.packages",
                    "nodes.map1.client_port"):
            self.assertIn(f"{key}: unknown key", message)

    def test_an_unknown_section_is_named(self) -> None:
        message = self.error(base(clustr={"secret": "x"}))
        self.assertIn("clustr: unknown section (did you mean cluster?)", message)

    def test_the_shipped_config_has_no_unknown_key(self) -> None:
        from rltwist.config import load_config

        load_config(Path(__file__).resolve().parent.parent / "etc" / "cluster.toml")


class TypedSections(unittest.TestCase):
    def test_hotreload_is_typed(self) -> None:
        config = config_from_dict(base(hotreload={"root": "..", "hotfix_interval": 0}))
        self.assertEqual((config.hotreload.root, config.hotreload.hotfix_interval,
                          config.hotreload.config_interval), ("..", 0.0, 10.0))
        with self.assertRaises(ConfigError) as cm:
            config_from_dict(base(hotreload={"config_interval": -1, "root": 3}))
        self.assertIn("hotreload.config_interval: must be >= 0", str(cm.exception))
        self.assertIn("hotreload.root: must be str", str(cm.exception))

    def test_lru_workers_are_typed_with_their_defaults(self) -> None:
        config = config_from_dict(base(lru={"agent": {"workers": 3}}))
        self.assertEqual(config.lru["agent"], LruSettings(workers=3, capacity=1000))
        self.assertEqual(config.lru["mail"], LruSettings(workers=4, capacity=1000))
        self.assertEqual(config.lru["guildhandler"], LruSettings(workers=2, capacity=1000))
        with self.assertRaises(ConfigError) as cm:
            config_from_dict(base(lru={"agnet": {"workers": 3},
                                       "mail": {"capacity": 0, "size": 1}}))
        message = str(cm.exception)
        self.assertIn("lru.agnet: unknown LRU service", message)
        self.assertIn("did you mean agent?", message)
        self.assertIn("lru.mail.capacity: must be 1-1000000", message)
        self.assertIn("lru.mail.size: unknown key", message)

    def test_hotfix_game_packages_is_a_list_of_names(self) -> None:
        config = config_from_dict(base(hotfix={"game_packages": ["mygame"]}))
        self.assertEqual(config.hotfix.game_packages, ("mygame",))
        self.assertRaises(ConfigError, config_from_dict, base(hotfix={"game_packages": "x"}))


class NodeStartRefusesAConfigTypo(unittest.TestCase):
    timeout = 60

    def test_a_node_started_with_an_unknown_key_exits_with_one_line(self) -> None:
        data = base(cluster={"secret": "a-secret-of-ours", "heartbeat_intreval": 2.0})
        path = Path(self.mktemp() + ".toml")
        path.write_text(render_config({"cluster": data["cluster"], "master": data["master"],
                                       **{f"nodes.{n}": t for n, t in data["nodes"].items()}}))
        r = subprocess.run([sys.executable, *TWISTD, "-n", "--pidfile=", "rl-map", "--sid",
                            "1", "--config", str(path)], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip().splitlines(), [
            f"rltwist: {path}: cluster.heartbeat_intreval: unknown key (did you mean "
            "heartbeat_interval?)"])


# -- item 17: development secrets on a reachable address ------------------------------------


class InsecureDefaults(unittest.TestCase):
    def config(self, host: str = "127.0.0.1", gm_host: str = "127.0.0.1",
               secret: str = DEV_CLUSTER_SECRET, token: str = DEV_GM_TOKEN,
               sdk_url: str = "") -> Any:
        data = base(cluster={"secret": secret},
                    master={"gm_token": token, "gm_host": gm_host},
                    login={"sdk_url": sdk_url, "dev_sdk_secret": DEV_SDK_SECRET})
        for table in data["nodes"].values():
            table["host"] = host
        return config_from_dict(data)

    def test_loopback(self) -> None:
        for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
            self.assertTrue(is_loopback(host), host)
        for host in ("0.0.0.0", "::", "10.0.0.5", "game.example", ""):
            self.assertFalse(is_loopback(host), host)

    def test_on_loopback_the_defaults_are_fine(self) -> None:
        config = self.config()
        for name in ("master", "map1", "login1"):
            self.assertEqual(insecure_defaults(config, name), ([], []))

    def test_each_node_is_checked_for_the_secrets_it_uses(self) -> None:
        config = self.config(host="0.0.0.0")
        self.assertEqual(insecure_defaults(config, "map1"), (["cluster.secret"], ["0.0.0.0"]))
        self.assertEqual(insecure_defaults(config, "master")[0],
                         ["cluster.secret", "master.gm_token"])
        self.assertEqual(insecure_defaults(config, "login1")[0],
                         ["cluster.secret", "login.dev_sdk_secret"])
        # a login node that asks a real SDK does not use the dev secret
        config = self.config(host="0.0.0.0", sdk_url="https://sdk.example/verify")
        self.assertEqual(insecure_defaults(config, "login1")[0], ["cluster.secret"])
        # GM reachable from elsewhere, cluster on loopback: the token still counts
        config = self.config(gm_host="0.0.0.0")
        self.assertEqual(insecure_defaults(config, "master"),
                         (["cluster.secret", "master.gm_token"], ["0.0.0.0"]))
        self.assertEqual(insecure_defaults(config, "map1"), ([], []))

    def test_own_secrets_are_fine_anywhere(self) -> None:
        config = self.config(host="0.0.0.0", secret="our-own-cluster-secret",
                             token="our-own-gm-token", sdk_url="https://sdk.example/v")
        for name in ("master", "map1", "login1"):
            self.assertEqual(insecure_defaults(config, name)[0], [])

    def test_insecure_dev_starts_anyway_with_a_warning(self) -> None:
        from rltwist.nodes.common.node import check_secrets

        config = self.config(host="0.0.0.0")
        self.assertRaises(SystemExit, check_secrets, config, "map1")
        check_secrets(config, "map1", insecure_dev=True)  # no SystemExit


class NodeRefusesDevSecretsOffLoopback(unittest.TestCase):
    """Real twistd processes; they refuse before they listen on anything."""

    timeout = 60

    def run_node(self, kind: str, *args: str, gm_host: str = "127.0.0.1",
                 host: str = "0.0.0.0") -> subprocess.CompletedProcess[str]:
        ports = iter(free_ports(7))
        sections = {"cluster": {"secret": DEV_CLUSTER_SECRET},
                    "master": {"gm_token": DEV_GM_TOKEN, "gm_host": gm_host,
                               "gm_port": next(ports)},
                    "nodes.master": {"host": host, "port": next(ports),
                                     "metrics_port": next(ports)},
                    "nodes.map1": {"host": host, "port": next(ports),
                                   "metrics_port": next(ports)}}
        path = Path(self.mktemp() + ".toml")
        path.write_text(render_config(sections))
        return subprocess.run([sys.executable, *TWISTD, "-n", "--pidfile=", f"rl-{kind}",
                               *args, "--config", str(path)], capture_output=True, text=True,
                              timeout=30)

    def test_a_region_node_names_the_cluster_secret(self) -> None:
        r = self.run_node("map", "--sid", "1")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        [line] = r.stderr.strip().splitlines()
        self.assertIn("map1 listens on 0.0.0.0 (not loopback) with the development default "
                      "cluster.secret", line)
        self.assertIn("--insecure-dev", line)

    def test_master_with_a_reachable_gm_api_names_the_gm_token(self) -> None:
        r = self.run_node("master", gm_host="0.0.0.0", host="127.0.0.1")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("cluster.secret, master.gm_token", r.stderr)
