"""README smoke test: every command a newcomer can copy from README.md is exercised.

Commands are read from the README's code blocks. The by-hand node commands, the bundled
Redis command and the GM curl lines are run here for real (on free ports); every other
command must be listed in ELSEWHERE with the test or CI step that runs it, so a new README
command that nothing runs fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from rltwist.launcher import LocalCluster, NodeProcess, free_ports
from tests.util import wait_for

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# command prefix -> where it runs
ELSEWHERE = {
    "pip install '.[dev]' && rl-cluster demo": ".ci/run runs this line verbatim",
    "pip install -e '.[dev]' --config-settings editable_mode=compat":
        "developer set-up; .ci/run installs non-editable",
    "twistd --help": ".ci/run and tests/test_node_process.py (plugins listed)",
    "python -m twisted.trial tests": ".ci/run runs this line verbatim",
    "rl-cluster up": "tests/test_rl_cluster.py",
    "rl-cluster status": "tests/test_rl_cluster.py",
    "rl-cluster down": "tests/test_rl_cluster.py",
    "rl-bot": "tests/test_bot_e2e.py",
    "python bench/": ".ci/run runs every benchmark with --quick",
    "rl-chaos run --quick": ".ci/run runs this line's command",
    "rl-chaos run --json": "the full schedule of the same code as --quick; docs/RELIABILITY.md",
    "rl-chaos fuzz": "tests/test_chaos_cli.py (smaller targets)",
    "rl-chaos soak": "tests/test_chaos_cli.py (fewer players, shorter)",
}


def readme_commands() -> list[str]:
    """Shell command lines in README code blocks (python code blocks excluded)."""
    text = README.read_text()
    commands = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang == "python":
            continue
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith(("#", "│", "clients", "GM (curl)")) \
                    and not set(line) <= set("─│<>- "):
                commands.append(line)
    return [c for c in commands if re.match(r"^[A-Za-z]", c) and "──" not in c]


class ReadmeCommands(unittest.TestCase):
    timeout = 240

    def test_every_readme_command_is_exercised(self) -> None:
        for cmd in readme_commands():
            if cmd.startswith(("twistd -n", "python -m rltwist.redis", "curl ", "GM=")):
                continue  # run by test_by_hand_nodes_and_gm_curl_lines
            self.assertTrue(any(cmd.startswith(prefix) for prefix in ELSEWHERE),
                            f"README command not exercised anywhere: {cmd}")

    async def test_by_hand_nodes_and_gm_curl_lines(self) -> None:
        commands = readme_commands()
        run_dir = Path(self.mktemp()).absolute()
        run_dir.mkdir(parents=True)
        # the bundled Redis, as the README starts it, on a free port
        redis_cmd = next(c for c in commands if c.startswith("python -m rltwist.redis"))
        redis_port = free_ports(1)[0]
        argv = shlex.split(redis_cmd.replace("--port 6379", f"--port {redis_port}"))
        redis = subprocess.Popen([sys.executable, *argv[1:]], cwd=run_dir,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: (redis.terminate(), redis.wait(10)))
        # the by-hand twistd lines, with etc/cluster.toml swapped for a free-port copy
        twistd_lines = [c for c in commands if c.startswith("twistd -n")]
        names = []
        for line in twistd_lines:
            words = shlex.split(line)
            kind = words[words.index("--pidfile=") + 1].removeprefix("rl-")
            number = words[words.index("--sid") + 1] if "--sid" in words else (
                words[words.index("--index") + 1] if "--index" in words else "")
            names.append(f"{kind}{number}")
        lc = LocalCluster(run_dir, names, overrides={
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"}})
        self.addCleanup(lc.stop_all)
        for line, name in zip(twistd_lines, names, strict=True):
            self.assertIn("--config etc/cluster.toml", line)
            proc = NodeProcess(name, lc.config_path, run_dir)
            lc.nodes[name] = proc
            argv = shlex.split(line.replace("etc/cluster.toml", str(lc.config_path)))
            proc.argv = lambda argv=argv: [sys.executable, "-c",  # type: ignore[method-assign]
                                           "from twisted.scripts.twistd import run; run()",
                                           *argv[1:]]
            proc.start()
        await lc.wait_up(names, timeout=60)
        # the curl lines, against this cluster's GM
        env = dict(os.environ, GM=lc.gm_url(), TOKEN=lc.sections["master"]["gm_token"])
        curls = [c for c in commands if c.startswith("curl ")]
        self.assertGreaterEqual(len(curls), 8)
        for line in curls:
            out = await deferToThread(subprocess.run, ["bash", "-c", line], env=env,
                                      capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, f"{line}: {out.stderr}")
            body = json.loads(out.stdout)
            self.assertFalse(isinstance(body, dict) and body.get("error"), f"{line}: {body}")
            if line.endswith("-X POST $GM/shutdown"):
                self.assertEqual(body["state"], "running")
        await wait_for(lambda: all(not p.running for p in lc.nodes.values()), 60,
                       "every node to exit after the README's POST /shutdown")
        self.assertEqual({n: p.exit_code for n, p in lc.nodes.items()},
                         dict.fromkeys(names, 0))
