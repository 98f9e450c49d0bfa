"""dsas-clone: make a bootable disk (block device or image file) for one host.

The order of work is what keeps a half-made disk from looking good:

1. checks (host known, target not mounted, not the running system's, big enough);
2. the target's partition-table areas are wiped first (start and end), so from
   here on the disk has no partition table and nothing will boot it;
3. every partition is reached through its own loop device (offset + size),
   formatted, mounted, filled (image from the store, or rsync from a peer),
   given the host's dsas.conf, fstab, SSH host keys and boot loader;
4. verified: every manifest file's sha256 on the target, fsck clean;
5. only then the partition table and boot code are written (the last step).

Any failure or interrupt in 2-5 leaves the target with no partition table, and
the error says so.

The work is cut into modules of this package, along those steps:

- ``model``: the source, the plan, the errors and the constants;
- ``checks``: the target is safe to write (step 1);
- ``sources``: an image from the store or a running peer, and ``make_plan``;
- ``cloner``: steps 2-5 (``Cloner.run``);
- ``interrupts``: SIGTERM as Ctrl-C, and no child started unseen.

This module gathers what a caller needs (``dsas-clone``, the bench).
"""

from __future__ import annotations

from .checks import check_block_target, check_file_target
from .cloner import Cloner
from .interrupts import deferred_interrupts, interrupts_as_errors
from .model import CloneError, Plan, Progress, Refused, Source
from .sources import gunzip_program, image_source, make_plan, peer_source, ssh_argv

__all__ = [
    "CloneError", "Cloner", "Plan", "Progress", "Refused", "Source", "check_block_target",
    "check_file_target", "deferred_interrupts", "gunzip_program", "image_source",
    "interrupts_as_errors", "make_plan", "peer_source", "ssh_argv",
]
