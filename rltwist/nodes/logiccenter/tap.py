"""twistd entry for `twistd rl-logiccenter`: options and the service tree of a logiccenter node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.logiccenter.service import build

Options = options_for("logiccenter")


def makeService(options: usage.Options) -> Node:
    return make_node("logiccenter", options, build)
