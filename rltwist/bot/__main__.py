"""``python -m rltwist.bot``: the same as ``rl-bot``."""

from rltwist.bot.cli import main

raise SystemExit(main())
