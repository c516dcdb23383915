"""The Redis layer: a private redis-server for tests and local runs, a prefixed client,
and the login/online state of DESIGN.md (Login, Lifecycle, Faults)."""
