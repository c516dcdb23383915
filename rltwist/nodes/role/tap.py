"""twistd entry for `twistd rl-role`: options and the service tree of a role node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.role.service import build

Options = options_for("role")


def makeService(options: usage.Options) -> Node:
    return make_node("role", options, build)
