"""Shared fixtures. Asyncio debug mode is on for every test so a blocking call in async code fails."""

from __future__ import annotations

import os

os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
