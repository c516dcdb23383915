"""The logiccenter node."""
