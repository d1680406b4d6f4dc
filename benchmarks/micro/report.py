"""Print each operation's best (min) time per caller and its ratio to legacy, from a pytest-benchmark JSON file.

``python -m benchmarks.micro.report bench.json``

The minimum is used because this machine is shared and noisy: it is the figure least
disturbed by other processes (the medians are in the JSON file too).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

from benchmarks.micro.conftest import VARIANTS


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    means: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        match = re.match(r"test_(\w+)\[(\w+)\]", bench["name"])
        if match:
            means[match[1]][match[2]] = bench["stats"]["min"]
    header = (
        f"{'operation':<18}" + "".join(f"{v:>16}" for v in VARIANTS) + f"{'twin/legacy':>13}{'a2s/twin':>10}"
    )
    print(header)
    for operation, row in means.items():
        if "legacy" not in row or "core_sync" not in row:
            continue
        cells = "".join(f"{row[v] * 1e6:>13.0f} us" if v in row else f"{'-':>16}" for v in VARIANTS)
        twin = row["core_sync"] / row["legacy"]
        a2s = f"{row['async_to_sync'] / row['core_sync']:>9.1f}x" if "async_to_sync" in row else f"{'-':>10}"
        print(f"{operation:<18}{cells}{twin:>12.2f}x{a2s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
