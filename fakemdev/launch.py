"""The ``fakemdev`` command's entry point.

``fakemdev mount MOUNTPOINT``, the line every CI job and container starts
with, goes straight to :func:`fakemdev.mountcmd.mount`: importing click and
building its command tree is about a third of the time before a default
mount answers (issue 17's start-up target). Any other command line, options
and ``--help`` included, is click's (:mod:`fakemdev.cli`), which calls the
same :func:`~fakemdev.mountcmd.mount` with the same defaults.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's); the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "mount" and args[1] and not args[1].startswith("-"):
        from .mountcmd import mount
        try:
            mount(args[1])
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        if argv is None:  # this process's own command line: it has nothing left to do
            _exit_now()
        return 0
    from .cli import main as click_main
    return click_main(args)


def _exit_now() -> None:
    """End the process without the interpreter's finalization, which tears
    down every module the mount imported: a sixth of the time before
    ``fakemdev mount`` returns, for a process whose daemon is already a
    separate process and that holds no buffered output, lock or thread."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
