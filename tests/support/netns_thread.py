"""Run a function in a network namespace from inside the test process.

Network namespaces are per thread: a thread that calls setns(2) and everything it
creates (sockets, further threads) live in that namespace. This lets a test drive an
in-process service with real sockets inside a lab namespace and still read its
metrics directly.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str, fn: Callable[[], T], timeout: float = 30) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({name})")
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            error.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name=f"netns-{name}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"function in {name} still running after {timeout}s")
    if error:
        raise error[0]
    return result[0]
