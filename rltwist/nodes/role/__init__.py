"""The role node."""
