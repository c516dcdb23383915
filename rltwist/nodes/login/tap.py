"""twistd entry for `twistd rl-login`: options and the service tree of a login node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.login.service import build

Options = options_for("login")


def makeService(options: usage.Options) -> Node:
    return make_node("login", options, build)
