"""`dsas-push` (placeholder until the push issue lands)."""

import sys


def main() -> None:
    print("dsas-push: not yet available", file=sys.stderr)
    sys.exit(2)
