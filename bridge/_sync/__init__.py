"""The bridge's sync face: generated from ``bridge/_async`` (only ``_compat`` is written by hand)."""
