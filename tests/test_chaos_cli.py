"""``rl-chaos fuzz`` and ``rl-chaos soak`` end to end, at small sizes (``rl-chaos run
--quick`` runs in .ci/run): each starts its own cluster, prints its table, writes the JSON
keys the issue names and exits 0 when every check holds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor, utils
from twisted.trial import unittest

REPO = Path(__file__).resolve().parent.parent


async def rl_chaos(*args: str) -> tuple[str, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    d = utils.getProcessOutputAndValue(sys.executable, ["-m", "rltwist.chaos", *args],
                                       env=env, path=str(REPO), reactor=reactor)
    out, err, code = await d
    return (out + err).decode(errors="replace"), code


class ChaosCommands(unittest.TestCase):
    timeout = 300

    def json_of(self, path: str) -> Any:
        return json.loads(Path(path).read_text())

    async def test_fuzz_reaches_its_targets_with_no_crash_leak_or_unauthenticated_action(
            self) -> None:
        out_json = os.path.abspath(self.mktemp())
        text, code = await rl_chaos("fuzz", "--client-frames", "3000", "--cluster-frames",
                                    "400", "--gm-requests", "300", "--seed", "7",
                                    "--run-dir", os.path.abspath(self.mktemp()),
                                    "--json", out_json)
        self.assertEqual(code, 0, text[-3000:])
        r = self.json_of(out_json)
        self.assertGreaterEqual(r["client_frames"], 3000)
        self.assertGreaterEqual(r["cluster_frames"], 400)
        for key in ("crashes", "fd_leaks", "unauthenticated_actions", "gm_500s"):
            self.assertEqual(r[key], 0, key)
        self.assertEqual(set(r["per_port"]), {"login", "gateway-pre", "gateway-post",
                                              "cluster-pre", "cluster-post"})
        self.assertIn("all checks passed", text)

    async def test_soak_holds_players_and_reports_rss_and_heartbeats(self) -> None:
        out_json = os.path.abspath(self.mktemp())
        text, _ = await rl_chaos("soak", "--players", "120", "--minutes", "0.4",
                                    "--warmup", "6", "--run-dir",
                                    os.path.abspath(self.mktemp()), "--json", out_json)
        r = self.json_of(out_json)
        # RSS within 5% over a 20 s window is not asserted here (a benchmark's business):
        # the command's own verdict is printed; the run itself must be error-free
        self.assertEqual(r["errors"], 0, text[-3000:])
        self.assertEqual(r["kicked"], 0)
        self.assertGreater(r["heartbeats_after_warmup"], 0)
        self.assertIsNotNone(r["heartbeat_ms"]["p99"])
        self.assertEqual(set(r["rss_kib"]["baseline"]), set(r["rss_growth"]))
        # the driver reports its own collector pauses next to the heartbeat figures
        self.assertGreaterEqual(r["driver_gc"]["passes"], 0)
        self.assertIn("the driver's own GC", text)
