"""How many PostgreSQL connections one worker of the fleet may open.

A worker's connections do not grow with its concurrency: the state stores'
statements are short (one row per checkpoint or status change), so a small
pool serves every drain, and a fleet of N workers needs at most
N x (STATE_POOL_DEFAULT + QUEUE_POOL_MAX) of the server's ``max_connections``
(100 by default) beside its API nodes. Before this bound the state pool grew
to 4 x concurrency: two workers at ``--concurrency 12`` asked for 116.
"""

from __future__ import annotations

#: Most connections of the queue's own pool (procrastinate: fetching, finishing, heartbeats).
QUEUE_POOL_MAX = 10
#: Default ``codeagent worker --db-connections``: the state stores' pool.
STATE_POOL_DEFAULT = 8
