"""The reliability campaign (``codeagent chaos``): kill it, starve it, feed it garbage, and count.

Real processes on real git workspaces with the stub LLM. One module per target family:

* :mod:`~codeagent_app.chaos.crashes`: SIGKILL at random moments of the legacy loop, the async
  core, one worker of several, and ``migrate apply`` / ``rollback``; restart; check;
* :mod:`~codeagent_app.chaos.llm_faults`: both loops against a stub answering 20% faults;
* :mod:`~codeagent_app.chaos.disk`: writes that fail part-way (RLIMIT_FSIZE, a full tmpfs, a
  read-only ``.agent/``) and the soak (RSS, fds, threads over thousands of todos);
* :mod:`~codeagent_app.chaos.reloads`: flag-file and config edits while todos run;
* :mod:`~codeagent_app.chaos.fuzz` and :mod:`~codeagent_app.chaos.escapes`: hypothesis over every
  parser and the API, adversarial edits against both loops' file components;
* :mod:`~codeagent_app.chaos.api_abuse`: tokens, oversized bodies, idle connections, bursts.

:mod:`~codeagent_app.chaos.workload` builds workspaces and says what their files must hold,
:mod:`~codeagent_app.chaos.checks` holds the invariants, :mod:`~codeagent_app.chaos.runner` runs
the targets, :mod:`~codeagent_app.chaos.report` writes the JSON and ``docs/reliability.md``.
"""
