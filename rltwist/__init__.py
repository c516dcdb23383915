"""rltwist: a Python/Twisted server suite for a global single-server SLG game backend."""

__version__ = "0.1.0"
