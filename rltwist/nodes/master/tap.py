"""twistd entry for `twistd rl-master`: options and the service tree of the master node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.master.service import build

Options = options_for("master")


def makeService(options: usage.Options) -> Node:
    return make_node("master", options, build)
