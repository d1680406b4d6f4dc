"""Code Agent: the shared sans-I/O domain and the thin CLI entry.

Kept free of imports on purpose so that ``codeagent.models`` and friends load
without pulling in the CLI, the stub server or any I/O library.
"""
