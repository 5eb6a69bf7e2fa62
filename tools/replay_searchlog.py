#!/usr/bin/env python3
"""Replay published search logs through edgenas's own search engine; exit 0 only if all match.

python tools/replay_searchlog.py tests/data/searchlogs/*.json   # the 11 published logs (vendored)
python tools/replay_searchlog.py --speculate 4 tests/data/searchlogs/*.json   # with speculation on
python tools/replay_searchlog.py tests/data/searchlogs/synthetic/*.json   # cases no published log reaches
"""

import argparse
import sys

from edgenas.search.replay import replay_log, replay_log_speculative


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="FILE.json")
    parser.add_argument(
        "--speculate",
        type=int,
        default=0,
        metavar="N",
        help="drive the search through speculative execution with N candidates at once",
    )
    args = parser.parse_args(argv)
    paths = args.paths
    matched = 0
    for path in paths:
        r = replay_log_speculative(path, args.speculate) if args.speculate > 1 else replay_log(path)
        verdict = "MATCH" if r.ok else "MISMATCH"
        print(
            f"{verdict}  {path}: {r.requests_matched}/{r.records} requests matched, "
            f"final architecture {'matches' if r.final_matched else 'differs'}" + (f" ({r.error})" if r.error else "")
        )
        matched += r.ok
    print(f"{matched}/{len(paths)} logs replayed exactly")
    return 0 if matched == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
