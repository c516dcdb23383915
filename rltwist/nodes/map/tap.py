"""twistd entry for `twistd rl-map`: options and the service tree of a map node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.map.service import build

Options = options_for("map")


def makeService(options: usage.Options) -> Node:
    return make_node("map", options, build)
