"""twistd entry for `twistd rl-rolecity`: options and the service tree of a rolecity node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.rolecity.service import build

Options = options_for("rolecity")


def makeService(options: usage.Options) -> Node:
    return make_node("rolecity", options, build)
