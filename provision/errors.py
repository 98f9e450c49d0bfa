"""The one base of dsas's expected errors: each carries its exit code, and the CLI
turns any of them into one line for the operator (click's ``ClickException`` is the
model). A traceback means a bug, never an expected failure."""

from __future__ import annotations

import errno

# errno values that mean this process (or the machine) is out of descriptors, buffers or
# memory: the server's trouble, never the client's; the client should try again
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class DsasError(Exception):
    """An expected failure: ``str()`` says what and why, ``exit_code`` is the status."""

    exit_code = 1

    def one_line(self) -> str:
        """The message on one line (a multi-line message joined with "; ")."""
        parts = [p.strip() for p in str(self).splitlines() if p.strip()]
        return "; ".join(parts) or type(self).__name__
