"""The rolecity node."""
