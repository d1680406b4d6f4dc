"""Per-component facades that route calls to legacy or new code by feature flag (shadow, canary, rollback)."""
