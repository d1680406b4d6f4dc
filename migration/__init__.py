"""Moves a legacy installation (config and on-disk state) to the new formats and back."""
