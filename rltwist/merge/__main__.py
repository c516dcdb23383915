"""``python -m rltwist.merge`` is ``rl-merge``."""

from rltwist.merge.cli import main

main()
