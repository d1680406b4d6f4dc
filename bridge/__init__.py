"""Per-component facades that route each call to legacy or new code by feature flag.

``_async/`` holds the async face, written once (dispatcher, facades, the LLM
facade and its recording transport); ``_sync/`` is generated from it by
``tools/codegen.py`` (only its ``_compat.py`` is written by hand). What both
faces share is here: the router (``routing.py``), the ledger of calls and
shadow verdicts (``ledger.py``), the health window and automatic rollback
(``health.py``, ``runtime.py``), the shadow plans (``plans.py``), the LLM tape
(``tape.py``), and the wiring that pairs each implementation's components
(``wiring.py``).
"""
