"""The fleet's tests use the ``pg_server`` and ``pg_dsn`` fixtures of ``tests/conftest.py`` (a fresh database each)."""
