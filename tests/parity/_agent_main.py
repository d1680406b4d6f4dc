"""Run one implementation's agent on a workspace until idle (a child process of the crash tests).

``python -m tests.parity._agent_main IMPL WORKSPACE LLM_URL`` exits 0 after
processing every todo, or dies by SIGKILL where ``CODEAGENT_KILL_AT`` says.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.parity._support import Impl


def main(name: str, workspace: str, url: str) -> int:
    with asyncio.Runner() as runner:
        impl = Impl(name, runner)
        agent = impl.agent(Path(workspace), url)
        try:
            agent.run(until_idle=True)
        finally:
            agent.aclose() if impl.is_async else agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
