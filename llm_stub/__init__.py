"""The stub LLM: an OpenAI-compatible server with scripted answers and injected faults.

``codeagent llm-stub`` (or ``python -m llm_stub``) serves it in the
foreground; :class:`StubServer` runs it in a background thread (tests);
:func:`start_stub_process` runs it in a child process (benchmarks).
"""

from __future__ import annotations

from llm_stub.options import FAULT_KINDS, StubOptions
from llm_stub.process import start_stub_process, stop_stub_process
from llm_stub.rules import RulesError
from llm_stub.server import StubServer, serve_forever

__all__ = [
    "FAULT_KINDS",
    "RulesError",
    "StubOptions",
    "StubServer",
    "serve_forever",
    "start_stub_process",
    "stop_stub_process",
]
