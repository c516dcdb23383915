"""twistd entry for `twistd rl-guild`: options and the service tree of a guild node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.guild.service import build

Options = options_for("guild")


def makeService(options: usage.Options) -> Node:
    return make_node("guild", options, build)
