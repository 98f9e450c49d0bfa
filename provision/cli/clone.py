"""`dsas-clone` (placeholder until the images/clone issue lands)."""

import sys


def main() -> None:
    print("dsas-clone: not yet available", file=sys.stderr)
    sys.exit(2)
