"""The application: the ``codeagent`` command, the loops' wiring, the flags' HTTP routes, the sample.

The only package that imports every other one: it decides which loop runs and
hands it the bridge's routed components.
"""
