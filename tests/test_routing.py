"""The routing helpers of the cluster API: which node serves a region service for an id,
and the region alias table a server merge installs."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial import unittest

from rltwist.cluster import Routing, birth_region
from tests.util import make_cluster

PACKAGE = Path(__file__).resolve().parents[1] / "rltwist"
USERID = 77 << 16 | 3  # seq 77, born in region 3
GUILDID = 5 << 16 | 9


class Helpers(unittest.TestCase):
    def test_ids_route_to_their_region_nodes(self) -> None:
        cluster = make_cluster("role1", 0)
        self.assertEqual(birth_region(USERID), 3)
        self.assertEqual((cluster.rolecity_node(USERID), cluster.mail_node(USERID),
                          cluster.guild_node(GUILDID), cluster.map_node(3)),
                         ("rolecity3", "mail3", "guild9", "map3"))

    def test_a_merged_region_is_served_by_its_target_with_ids_unchanged(self) -> None:
        cluster = make_cluster("role1", 0)
        cluster.routing.set_aliases({3: 1, 9: 1})
        self.assertEqual((cluster.rolecity_node(USERID), cluster.mail_node(USERID),
                          cluster.guild_node(GUILDID), cluster.map_node(3),
                          cluster.map_node(2)),
                         ("rolecity1", "mail1", "guild1", "map1", "map2"))
        self.assertEqual(birth_region(USERID), 3)  # the id still says where it was born
        cluster.routing.set_aliases({})
        self.assertEqual(cluster.rolecity_node(USERID), "rolecity3")

    def test_chains_resolve_and_bad_tables_are_refused_keeping_the_old_one(self) -> None:
        routing = Routing({3: 2, 2: 1})  # 3 merged into 2, later 2 into 1
        self.assertEqual(routing.aliases, {3: 1, 2: 1})
        self.assertEqual(routing.mail_node(USERID), "mail1")
        for bad in ({1: 1}, {1: 2, 2: 1}, {0: 1}, {1: 65536}, {True: 2}, {"3": 1}):
            self.assertRaises(ValueError, routing.set_aliases, bad)
        self.assertEqual(routing.aliases, {3: 1, 2: 1})

    def test_every_cluster_has_its_own_table(self) -> None:
        a, b = make_cluster("a", 0), make_cluster("b", 0)
        a.routing.set_aliases({3: 1})
        self.assertEqual((a.mail_node(USERID), b.mail_node(USERID)), ("mail1", "mail3"))

    def test_no_code_formats_region_node_names_or_masks_ids_itself(self) -> None:
        # the alias table only works if every route goes through the helpers
        inline = re.compile(r'f"(rolecity|mail|map|guild)\{|& ?0x[fF]{4}\b')
        allowed = {PACKAGE / "cluster" / "routing.py"}
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path in allowed or "protocols" in path.parts:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if inline.search(line):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
        self.assertEqual(found, [])
