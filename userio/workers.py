"""Worker processes that never outlive the command that started them.

A ``kill -9`` of ``dmmlkd study`` or ``dmmlkd compare`` gives the parent no chance to stop its
pool; without this, the workers (hundreds of MB each) were re-parented to PID 1 and kept
running. :func:`exit_with_parent` is the pool's initializer: on Linux the kernel sends the
worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog
thread ends the worker within a second of its parent's pid changing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_EVERY_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this process as soon as ``parent_pid`` is no longer its parent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the watchdog alone does it
            pass
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="dmmlkd-parent-watchdog",
                     daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_EVERY_S)
    os._exit(1)  # no cleanup to do: the parent that would journal our result is gone
