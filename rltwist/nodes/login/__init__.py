"""The login node."""
