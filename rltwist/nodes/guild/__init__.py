"""The guild node."""
