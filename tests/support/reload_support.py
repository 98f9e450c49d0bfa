"""The hostile inventories of issue 13 item 8 (test_reload_limits, test_reload_limits_lab)."""

from __future__ import annotations

import sys
from pathlib import Path

DSAS = str(Path(sys.executable).parent / "dsas")


NESTED = "cluster: " + "[" * 1000 + "]" * 1000 + "\n"  # 2 KB


BOMB = """\
# the last alias stands for 9**9 (387 million) strings
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
cluster: *i
"""


HOSTILE = {"nested": NESTED, "bomb": BOMB}
