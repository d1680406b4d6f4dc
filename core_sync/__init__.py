"""GENERATED sync twins of core_async component modules (unasync + project rules). Do not edit by hand."""
