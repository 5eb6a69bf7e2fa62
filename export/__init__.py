"""The device kit: a standalone checker and benchmark to copy onto an edge device."""
