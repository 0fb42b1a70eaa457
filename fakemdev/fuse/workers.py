"""Loop threads on demand: a single-threaded mount that never freezes.

The default mount runs libfuse's single-threaded loop: one thread reads a
request from ``/dev/fuse``, answers it, reads the next. That is the cheapest
way to serve (libfuse's multi-threaded loop costs about twice as much per
request, see docs/performance.md), but a request that *waits* (a ``remove``
of a device a VFIO user holds open, a fault-injected slow probe) would stop
every other request behind it, where a kernel blocks only that writer.

So a request thread about to wait calls :meth:`OnDemandWorkers.waiting`
(``Host.wait_guard``). If no other loop thread is then free to read
``/dev/fuse``, it starts a stand-in that runs the same loop as libfuse's
``fuse_session_loop`` (``fuse_session_receive_buf`` and
``fuse_session_process_buf`` on the mount's session, which the high-level
library makes safe to share between threads, as its own multi-threaded loop
does). A stand-in that finds another loop thread free after a request
leaves, so the mount is back to one thread soon after the last wait ends,
and requests that never wait pay nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("fakemdev.fuse")

# How often an idle stand-in looks up from its poll() to see whether the
# session has ended or it is no longer needed.
POLL_MS = 200


class FuseBuf(ctypes.Structure):
    """``struct fuse_buf`` of libfuse 3 (size, flags, mem, fd, pos); the
    reserved tail covers fields later releases append (3.17's ``mem_size``),
    which libfuse reads as zero, that is unset."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64), ("_reserved", ctypes.c_uint64 * 8)]


def _bind(lib: Any) -> dict[str, Any] | None:
    """The low-level session functions, or None if this libfuse lacks one."""
    want = {"fuse_session_receive_buf": ([ctypes.c_void_p, ctypes.POINTER(FuseBuf)], ctypes.c_int),
            "fuse_session_process_buf": ([ctypes.c_void_p, ctypes.POINTER(FuseBuf)], None),
            "fuse_session_exited": ([ctypes.c_void_p], ctypes.c_int),
            "fuse_session_fd": ([ctypes.c_void_p], ctypes.c_int)}
    out = {}
    for name, (argtypes, restype) in want.items():
        fn = getattr(lib, name, None)
        if fn is None:
            return None
        fn.argtypes, fn.restype = argtypes, restype
        out[name] = fn
    return out


_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None


class OnDemandWorkers:
    """Stand-in loop threads for one single-threaded FUSE session.

    ``free`` counts loop threads that are not inside a wait, i.e. that will
    read the next request; it never drops to 0 while the session runs.
    """

    def __init__(self, lib: Any, session: int, on_session_end: Callable[[], None] = lambda: None) -> None:
        """Created on the thread that runs libfuse's own loop (in ``init``)."""
        fns = _bind(lib)
        if fns is None:
            raise RuntimeError("this libfuse has no fuse_session_receive_buf/process_buf")
        self._fns = fns
        self._session = session
        self._on_session_end = on_session_end
        self._lock = threading.Lock()
        self._loop_threads: set[int] = {threading.get_ident()}
        self._free = 1
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.started = 0        # stand-ins started so far (tests and docs read it)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a wait on a loop thread: make sure another thread reads
        requests meanwhile. Other threads (the control socket, the library
        API) are no loop threads and pass straight through."""
        if threading.get_ident() not in self._loop_threads:
            yield
            return
        with self._lock:
            self._free -= 1
            if self._free == 0 and not self._stopping:
                self._start_locked()
        try:
            yield
        finally:
            with self._lock:
                self._free += 1

    def _start_locked(self) -> None:
        t = threading.Thread(target=self._serve, name=f"fakemdev-loop-{self.started + 1}", daemon=True)
        self._free += 1
        self.started += 1
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        with self._lock:
            self._loop_threads.add(me)
        buf = FuseBuf()
        try:
            ended = self._loop(buf)
        except Exception:  # a stand-in must never take the daemon down
            log.exception("fakemdev: a stand-in FUSE loop thread failed")
            ended = False
        finally:
            _libc.free(buf.mem)
        if ended:
            with self._lock:
                self._loop_threads.discard(me)
                self._free -= 1
            self._on_session_end()

    def _loop(self, buf: FuseBuf) -> bool:
        """libfuse's fuse_session_loop, leaving early once not needed
        (False) or when the session ends (True)."""
        receive, process = self._fns["fuse_session_receive_buf"], self._fns["fuse_session_process_buf"]
        exited = self._fns["fuse_session_exited"]
        se = self._session
        poller = select.poll()
        poller.register(self._fns["fuse_session_fd"](se), select.POLLIN)
        while not self._stopping and not exited(se):
            if poller.poll(POLL_MS):
                res = receive(se, ctypes.byref(buf))
                if res == -errno.EINTR:
                    continue
                if res <= 0:
                    return True
                process(se, ctypes.byref(buf))
            if self._retire_if_surplus():
                return False
        return True

    def _retire_if_surplus(self) -> bool:
        """Leave (in one step with the count) if another loop thread is free
        to read the next request."""
        with self._lock:
            if self._free > 1:
                self._free -= 1
                self._loop_threads.discard(threading.get_ident())
                return True
            return False

    def stop(self, timeout: float = 2.0) -> None:
        """The session is ending (libfuse's ``destroy``): stand-ins leave
        before libfuse frees the session they use."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)
