"""The bridge's async face, written once; ``bridge/_sync`` is generated from it by ``tools/codegen.py``."""
