"""rl-chaos: fault injection with a ledger of promises, fuzzing and soak runs against a
local cluster (see :mod:`rltwist.chaos.cli`)."""
