"""twistd entry for `twistd rl-mail`: options and the service tree of a mail node."""

from twisted.python import usage

from rltwist.nodes.common.node import Node, make_node, options_for
from rltwist.nodes.mail.service import build

Options = options_for("mail")


def makeService(options: usage.Options) -> Node:
    return make_node("mail", options, build)
