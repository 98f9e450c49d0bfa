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
    wanted = [a for a in argv if not a.startswith("-")] or areas()
    rest = [a for a in argv if a.startswith("-")]
    unknown = [a for a in wanted if a not in areas()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(areas())}",
              file=sys.stderr)
        return 2
    worst = 0
    for area in wanted:
        print(f"==== bench {area} ====", flush=True)
        mod = importlib.import_module(f"bench.{area}")
        worst = max(worst, int(mod.main(rest) or 0))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
