"""Export: the formats table, the export folder's layout, the exporters, the INT8 gate and parity."""
