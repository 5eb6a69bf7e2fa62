#!/usr/bin/env python3
"""Replay published search logs through edgenas's own search engine; exit 0 only if all match.

    python tools/replay_searchlog.py ../shared/reference/searchlogs/*.json
"""

import sys

from edgenas.replay import replay_log


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: replay_searchlog.py FILE.json [FILE.json ...]", file=sys.stderr)
        return 2
    matched = 0
    for path in paths:
        r = replay_log(path)
        verdict = "MATCH" if r.ok else "MISMATCH"
        print(f"{verdict}  {path}: {r.requests_matched}/{r.records} requests matched, "
              f"final architecture {'matches' if r.final_matched else 'differs'}" + (f" ({r.error})" if r.error else ""))
        matched += r.ok
    print(f"{matched}/{len(paths)} logs replayed exactly")
    return 0 if matched == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
