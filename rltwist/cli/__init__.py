"""Console commands: rl-cluster (and rl-bot, in rltwist.bot)."""
