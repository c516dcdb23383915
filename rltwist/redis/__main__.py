"""``python -m rltwist.redis``: run a private redis-server for a local cluster."""

from rltwist.redis.server import main

main()
