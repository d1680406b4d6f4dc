"""Past one machine: workspaces drained by workers on many hosts, through PostgreSQL.

``queue.py`` is the procrastinate glue (a job per workspace drain, stalled
jobs retried); ``events.py`` carries the kernel's events into the database's
event log and out of it to any node's API. The state stores themselves are
``core_async/pg_state.py`` (and its generated sync twin), behind the same
protocols as the file stores.
"""
