"""The mail node."""
