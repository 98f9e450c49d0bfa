"""dsas-clone's pure parts: tar's progress lines, interrupts deferred around a child's
start (the clones onto loop devices are in tests/lab/test_clone.py)."""

from __future__ import annotations

import signal
import time

import pytest

from provision.clone import clone as clone_mod
from provision.clone import model, sources


def test_tar_progress_lines() -> None:
    """tar's checkpoint lines give bytes read; every other stderr line is an error."""
    line = f"tar: {model.TAR_PROGRESS} r: 10485760 (10MiB, 312MiB/s)\n"
    assert sources.tar_progress(line) == 10485760
    assert sources.tar_progress("tar: ./etc/x: Cannot open: No space left on device") is None
    assert sources.tar_progress(f"tar: {model.TAR_PROGRESS} r: junk") is None
    assert clone_mod.gunzip_program() == "igzip"  # Debian package isal (tools/apt-packages.txt)


def test_interrupt_waits_for_a_deferred_block() -> None:
    """SIGTERM while a child is being started lands after the block, never inside it."""
    import os
    reached = []
    with pytest.raises(KeyboardInterrupt), clone_mod.interrupts_as_errors():
        with clone_mod.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            reached.append("end of block")
        reached.append("after the block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
