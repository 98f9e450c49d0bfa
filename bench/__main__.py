"""`python -m bench [AREA...]`: run the benchmarks (all of them by default).

Each ``bench/<area>.py`` has ``main(argv) -> int`` and prints a side-by-side
table with ratios against the real peer (Kea, dnsmasq, tftpd-hpa, rsync).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def areas() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_") and m.name != "common")


def main(argv: list[str]) -> int:
    # Leading names choose benchmarks; everything from the first option on is theirs.
    known = areas()
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{__doc__.strip()}\n\nbenchmarks: {', '.join(known)}")
        return 0
    wanted: list[str] = []
    for i, a in enumerate(argv):
        if a.startswith("-"):
            rest = argv[i:]
            break
        if a not in known:
            print(f"unknown benchmark {a!r}; have: {', '.join(known)}", file=sys.stderr)
            return 2
        wanted.append(a)
    else:
        rest = []
    wanted = wanted or known
    worst = 0
    for area in wanted:
        print(f"==== bench {area} ====", flush=True)
        mod = importlib.import_module(f"bench.{area}")
        worst = max(worst, int(mod.main(rest) or 0))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
