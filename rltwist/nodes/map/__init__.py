"""The map node."""
