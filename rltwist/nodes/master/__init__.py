"""The master node."""
