"""mfusepy operations over the sysfs projection.

A thin adapter: every callback resolves the path in :class:`~fakemdev.sysfs.SysfsTree`
and maps :class:`~fakemdev.errors.KernelError` to its errno. What it adds is
what kernfs does at the VFS boundary: open-time EACCES even for root, one
``store()`` per ``write()`` (offset ignored, cut to 4096 bytes), seq_file reads,
binary attributes read and written at the offset (:mod:`fakemdev.vfs`),
ENODEV on descriptors whose node died, EPERM for namespace changes.

Caching: the kernel may cache entries and attributes (``cache_timeout``), and
every model change invalidates the paths it touched with libfuse 3's
``fuse_invalidate_path()`` before the write that caused it returns, so the
tree is exact the moment a write returns. Attribute files are ``direct_io``
so readers never see st_size padding or stale contents.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .. import vfs
from ..core import Change, Host
from ..errors import KernelError
from ..kernfs import Node
from ..sysfs import SysfsTree, state_of
from . import fastattr, readdirplus
from .binding import mfusepy
from .workers import OnDemandWorkers

readdirplus.install()
fastattr.install()

log = logging.getLogger("fakemdev.fuse")
FuseOSError = mfusepy.FuseOSError

_libfuse = mfusepy._libfuse
_invalidate: Any = getattr(_libfuse, "fuse_invalidate_path", None)
if _invalidate is not None:
    _invalidate.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    _invalidate.restype = ctypes.c_int


# Dentries of removed devices: fuse_invalidate_path() only invalidates
# attributes, so the kernel (and libfuse's node table, which mirrors it)
# would keep every removed device's dentries until memory pressure. The
# low-level entry notification drops them; it needs the parent's node id,
# which the high-level library reports as st_ino (no use_ino option here).
_get_session: Any = getattr(_libfuse, "fuse_get_session", None)
_inval_entry: Any = getattr(_libfuse, "fuse_lowlevel_notify_inval_entry", None)
if _get_session is not None and _inval_entry is not None:
    _get_session.argtypes = [ctypes.c_void_p]
    _get_session.restype = ctypes.c_void_p
    _inval_entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
    _inval_entry.restype = ctypes.c_int
FUSE_ROOT_ID = 1

# Directories whose READDIRPLUS listing is kept (per model generation); a
# walk needs the few on its path, a client polling one directory needs one.
LISTING_CACHE_MAX = 1024
# Paths whose getattr answer is kept (per model generation and chmod count).
STAT_MEMO_MAX = 16384
# a directory with more entries is not warmed (see MdevOperations._warm_siblings): after each change
# its first lookup would build attributes for all of them, for one answer
WARM_DIR_MAX = 512
WARM_MAX = 4096  # paths in warm: a walk needs only the directories it is in
# A tree of at most this many entries is projected whole before the mount
# answers (:meth:`MdevOperations.prebuild`): about 20 µs an entry, so the
# default host's 408 cost a few milliseconds of mount time, and a first walk
# then runs at the speed of a plain dict server.
PREBUILD_MAX = 1024
# ... and is tried only with at most this many devices, PCI functions and
# parents (dozens of entries each), so a big host's mount does not build a
# thousand entries to throw them away
PREBUILD_UNITS = 16

# The reaper drops removed dentries in batches gathered over this long: each
# wake-up of its thread costs the loop thread a GIL hand-over, per remove
# that was a third of a create+remove pair's time in the daemon.
REAP_BATCH_S = 0.05


def syscall(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map model errors to errno; any other exception is EIO plus a log line,
    never a dead mount."""
    @functools.wraps(func)
    def wrapper(self: MdevOperations, *args: Any) -> Any:
        try:
            return func(self, *args)
        except KernelError as e:
            raise FuseOSError(e.errno or errno.EIO) from None
        except FuseOSError:
            raise
        except (Exception, SystemExit):  # a driver calling sys.exit() must not end the mount either
            log.exception("fakemdev: %s%r failed; answering EIO", func.__name__, args[:2])
            raise FuseOSError(errno.EIO) from None
    return wrapper


class MdevOperations(mfusepy.Operations):  # type: ignore[misc,name-defined]  # mfusepy ships no types
    """The filesystem. ``hosts`` maps a name to a Host; with one host the
    mount root is its ``/sys``, with several each is ``/<name>/``."""

    use_ns = True
    use_readdirplus = True  # entries carry their attributes (False: mfusepy's plain readdir, a LOOKUP each)

    def __init__(self, hosts: dict[str, Host], multi: bool = False, cache_timeout: float = 10.0,
                 mountpoint: str | None = None, threads: bool = False) -> None:
        self.hosts = hosts
        self.multi = multi or len(hosts) != 1
        self.trees = {name: SysfsTree(h) for name, h in hosts.items()}
        # one host: every path resolves in it (the common case, so no per-request dict work)
        self._only = None if self.multi else next(iter(zip(hosts.values(), self.trees.values(), strict=True)))
        self.cache_timeout = cache_timeout
        self._handles: dict[int, vfs.OpenFile] = {}
        self._fh_ids = itertools.count(1)  # next() is atomic: one lock per host, not per mount
        self._fuse_ptr: int | None = None
        self._seen: dict[str, set[str]] = {}     # dir path -> child names the kernel looked up
        self._seen_lock = threading.Lock()
        self._uid = os.getuid()
        self.stats = {"invalidations": 0, "entries_dropped": 0}
        self.mountpoint = mountpoint
        self._session: int | None = None
        self._reap: deque[tuple[str, str]] = deque()  # dentries for the reaper; append/popleft are atomic
        self._reap_wake = threading.Event()
        self.threads = threads
        self.workers: OnDemandWorkers | None = None
        # READDIRPLUS: listings with attributes, valid while (generation, chmods) stay
        self._listings: dict[str, readdirplus.Listing] = {}
        self._stat_pool = readdirplus.StatPool(use_ns=self.use_ns)
        self._chmods = 0
        # getattr's answers (``struct stat``) by the raw path libfuse gives, for :mod:`.fastattr` to
        # answer from without a handler call; every change and chmod empties it (under the host lock)
        self.stat_hits: dict[bytes, Any] = {}
        # the same for paths the kernel has not looked up yet: the siblings of one it did
        # (:meth:`_warm_siblings`); fastattr marks a path seen before it answers from here
        self.warm: dict[bytes, Any] = {}
        self._dir_misses: dict[str, int] = {}  # directory -> its lookups the handler answered (2: warmed)
        self._unmarked: set[str] = set()  # listings built before the kernel asked (prebuild): mark when served
        self.on_init: Callable[[], None] | None = None  # called once the kernel's FUSE_INIT is handled
        for name, host in hosts.items():
            prefix = f"/{name}" if self.multi else ""
            host.listeners.append(functools.partial(self._on_change, prefix, self.trees[name]))

    # -- plumbing -----------------------------------------------------------
    def init_with_config(self, conn: Any, config: Any) -> None:
        """FUSE_INIT. Whatever happens here, ``on_init`` runs at the end: a
        forking parent waits for it, and an init that failed half-way must
        not leave it waiting forever (the mount answers anyway)."""
        try:
            self._init(conn, config)
        finally:
            if self.on_init is not None:
                self.on_init()

    def _init(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = self.cache_timeout
            config.attr_timeout = self.cache_timeout
            config.negative_timeout = 0.0
        if self.use_readdirplus:
            readdirplus.want_plus_always(conn)
        self._fuse_ptr = _libfuse.fuse_get_context().contents.fuse
        session = _get_session(self._fuse_ptr) if _get_session is not None else None
        if session and not self.threads:
            # runs on libfuse's own loop thread, which OnDemandWorkers takes as the first loop thread
            try:
                self.workers = OnDemandWorkers(_libfuse, session, on_session_end=self._abort_waits)
            except RuntimeError as e:  # a libfuse without the low-level session calls
                log.warning("no stand-in loop threads (%s): a blocked remove holds every request", e)
            else:
                for host in self.hosts.values():
                    host.wait_guard = self.workers.waiting
        if self.mountpoint and session and _inval_entry is not None:
            self._session = session
            threading.Thread(target=self._reaper, name="fakemdev-reaper", daemon=True).start()

    def destroy(self, path: str) -> None:
        """libfuse is about to free the session: stand-in loop threads leave first."""
        if self.workers is not None:
            self.workers.stop()
            for host in self.hosts.values():
                host.wait_guard = contextlib.nullcontext

    def _abort_waits(self) -> None:
        """The session ended while a request may still wait (a blocked
        remove): let it return so libfuse's own loop can end too."""
        for host in self.hosts.values():
            host.abort_waits()

    def _reaper(self) -> None:
        """Drop the kernel's dentries of removed subtrees, after the syscall
        that removed them has returned (their attributes were invalidated in
        it already, so this is about memory, not correctness). It runs on its
        own thread because learning a parent's node id takes a stat() of our
        own mount, which the FUSE loop must be free to answer."""
        nodeids: dict[str, int] = {}
        while True:
            self._reap_wake.wait()
            time.sleep(REAP_BATCH_S)  # let a burst of removes gather: one wake-up for all of them
            self._reap_wake.clear()
            while self._reap:
                self._reap_one(nodeids, *self._reap.popleft())

    def _reap_one(self, nodeids: dict[str, int], head: str, name: str) -> None:
        try:
            nodeid = FUSE_ROOT_ID if head in ("", "/") else nodeids.get(head)
            if nodeid is None:
                nodeid = nodeids[head] = os.lstat(f"{self.mountpoint}{head}").st_ino
            raw = name.encode("utf-8", "surrogateescape")
            if _inval_entry(self._session, nodeid, raw, len(raw)) == 0:
                self.stats["entries_dropped"] += 1
            elif head not in ("", "/"):
                nodeids.pop(head, None)  # that directory may have been replaced: learn its id again
        except OSError:
            nodeids.pop(head, None)
        except Exception:  # never let memory housekeeping take the daemon down
            log.exception("fakemdev: dropping the dentry %s/%s failed", head, name)

    def _split(self, path: str) -> tuple[Host | None, SysfsTree | None, str]:
        if self._only is not None:
            return self._only[0], self._only[1], path.lstrip("/")
        parts = path.lstrip("/").split("/", 1)
        tree = self.trees.get(parts[0])
        if tree is None:
            return None, None, ""
        return tree.host, tree, parts[1] if len(parts) > 1 else ""

    def _resolve(self, path: str) -> tuple[Host, Node, str]:
        if self.multi and path in ("/", ""):
            raise FuseOSError(errno.EISDIR)  # handled by callers that accept the root
        host, tree, rel = self._split(path)
        if tree is None or host is None:
            raise FuseOSError(errno.ENOENT)
        node = tree.lookup(rel)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        return host, node, rel

    def _lock_for(self, path: str) -> Any:
        """The lock of the host serving path. Resolve under it, and use the
        node before releasing it: a node looked up outside it may belong to
        a device another thread (a FUSE worker, the control socket) has
        removed meanwhile, and would be answered in its unbound shape."""
        host, _, _ = self._split(path)
        return host.lock if host is not None else contextlib.nullcontext()

    def _remember(self, path: str) -> None:
        head, _, name = path.rpartition("/")
        known = self._seen.get(head or "/")
        if known is not None and name in known:
            return  # the usual case after the first lookup; reading needs no lock
        with self._seen_lock:
            s = self._seen.get(head or "/")
            if s is None:
                s = self._seen[head or "/"] = set()
            s.add(name)

    def _on_change(self, prefix: str, tree: SysfsTree, change: Change) -> None:
        """Invalidate what a mutation made stale, before the syscall returns.

        Only paths the kernel has looked up (``_seen``, filled by getattr, which
        libfuse calls for every LOOKUP) can be cached, so only those cost a
        notification; each path is notified once per change."""
        self._forget_answers()
        inv = tree.invalidation(change)  # always: the tree follows its mount points
        if self._fuse_ptr is None or _invalidate is None:
            return
        todo: dict[str, None] = {}
        seen_get = self._seen.get
        top = prefix or "/"
        with self._seen_lock:  # most paths of a change were never looked up: those cost one dict miss
            for rel in inv.gone:
                head, _, name = rel.rpartition("/")
                known = seen_get(f"{prefix}/{head}" if head else top)
                if (known is not None and name in known) or f"{prefix}/{rel}" in self._seen:
                    self._collect_tree(f"{prefix}/{rel}", todo)
            for rel in inv.changed:
                head, _, name = rel.rpartition("/")
                known = seen_get(f"{prefix}/{head}" if head else top)
                if known is not None and name in known:
                    todo[f"{prefix}/{rel}"] = None
        self._invalidate_paths(todo)

    def _forget_answers(self) -> None:
        """What a change or chmod makes stale in the callback's own answers
        (:attr:`stat_hits`, :attr:`warm`); called under the host lock."""
        self.stat_hits.clear()
        self.warm.clear()
        self._dir_misses.clear()
        self._unmarked.clear()  # every listing is rebuilt (and marked) after a change or chmod

    def _invalidate_paths(self, paths: Collection[str]) -> None:
        """Tell the kernel to drop its cached attributes of paths."""
        ptr = self._fuse_ptr
        self.stats["invalidations"] += len(paths)
        for path in paths:
            _invalidate(ptr, path.encode("utf-8", "surrogateescape"))

    def _collect_tree(self, path: str, todo: dict[str, None]) -> None:
        """A vanished subtree: every path of it the kernel knows, forgotten here."""
        head, _, name = path.rpartition("/")
        parent = self._seen.get(head or "/")
        if parent is not None and name in parent:
            parent.discard(name)
            todo[path] = None
            if self._session is not None:
                self._reap.append((head, name))
                if not self._reap_wake.is_set():  # waking the reaper is a GIL hand-over: once per batch
                    self._reap_wake.set()
        stack = [path]
        while stack:
            p = stack.pop()
            children = self._seen.pop(p, None)
            if children:
                for c in children:
                    child = f"{p}/{c}"
                    todo[child] = None
                    stack.append(child)

    @staticmethod
    def _caller() -> tuple[int, int]:
        uid, gid, _pid = mfusepy.fuse_get_context()
        return uid, gid

    # Files belong to whoever mounted the tree: root for a root mount (as in
    # sysfs), the user for a user mount, who then acts on it as root acts on
    # /sys (its owner bits apply), while other users get the "other" bits.
    OWNER = (os.geteuid(), os.getegid())

    def _dac_bits(self, mode: int, uid: int, gid: int) -> int:
        if uid == self.OWNER[0]:
            return (mode >> 6) & 7
        if gid == self.OWNER[1]:
            return (mode >> 3) & 7
        return mode & 7

    def _may_change_metadata(self) -> bool:
        uid = self._caller()[0]
        return uid == 0 or uid == self.OWNER[0]

    def _mode(self, host: Host, rel: str, node: Node) -> int:
        return state_of(host).mode_overrides.get(rel, node.mode)

    # -- metadata -------------------------------------------------------------
    @syscall
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        return self._attrs(path)[0]

    @syscall
    def getattr_struct(self, path: str, fh: Any = None, raw: bytes | None = None) -> Any:
        """getattr as the interned ``struct stat`` (:mod:`.fastattr` copies it into the reply
        and passes libfuse's ``raw`` path, under which the answer goes into :attr:`stat_hits`)."""
        return self._attrs(path, raw)[1]

    def _attrs(self, path: str, raw: bytes | None = None) -> tuple[dict[str, Any], Any]:
        if self.multi and path == "/":
            key = ("hosts root", len(self.hosts))
            return self._stat_pool.get(key) or self._stat_pool.add(
                key, self._stat_dict(stat.S_IFDIR | 0o755, 2 + len(self.hosts), None))
        host, tree, rel = self._split(path)
        if host is None or tree is None:
            raise FuseOSError(errno.ENOENT)
        with host.lock:  # see _lock_for
            node = tree.lookup(rel)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            self._remember(path)
            st = self._stat(host, tree, rel, node)
            if raw is not None:  # kept until the next change (which cannot come while we hold the lock)
                hits = self.stat_hits
                if len(hits) >= STAT_MEMO_MAX:
                    hits.clear()
                hits[raw] = st[1]
                if rel:
                    self._warm_siblings(host, tree, path, rel)
            return st

    def _warm_siblings(self, host: Host, tree: SysfsTree, path: str, rel: str) -> None:
        """Put the attributes of path's siblings in :attr:`warm` (under the host lock).

        A client that looks up two entries of a directory mostly looks up the
        others next (``ls -l``, an lstat walk, libvirt reading a device's
        attributes). Their attributes come from one listing of the directory,
        which the tree keeps for the generation anyway, so each later LOOKUP
        is a dict hit in the callback instead of a handler call (about 3x
        cheaper in the daemon). Like :attr:`stat_hits`, it holds until the
        next change or chmod. Not at the first lookup: the paths a writer
        resolves after each change (a new device's directory, then its
        ``remove``) are one per directory, and warming there cost a
        create+remove pair a fifth of its time."""
        head = path.rpartition("/")[0] or "/"
        misses = self._dir_misses.get(head, 0)
        if misses >= 2:
            return  # warmed already
        self._dir_misses[head] = misses + 1
        if misses == 0:
            return
        head_rel = rel.rpartition("/")[0]
        d = tree.lookup(head_rel)
        if d is None or d.kind != "dir":
            return
        children = tree.listing(head_rel, d)  # type: ignore[arg-type]
        if len(children) > WARM_DIR_MAX:
            return
        warm = self.warm
        if len(warm) + len(children) > WARM_MAX:
            warm.clear()
        prefix, prefix_rel = ("" if head == "/" else head), (f"{head_rel}/" if head_rel else "")
        for name, child in children:
            warm[f"{prefix}/{name}".encode("utf-8", "surrogateescape")] = \
                self._stat(host, tree, prefix_rel + name, child)[1]

    def remember_raw(self, raw: bytes) -> None:
        """Mark a path the kernel is about to cache (from :attr:`warm`) as seen,
        so that the next change invalidates it: called before the answer is
        read, so a change in between either clears ``warm`` first (and the
        handler answers) or sees the path."""
        self._remember(raw.decode("utf-8", "surrogateescape"))

    def _stat(self, host: Host, tree: SysfsTree, rel: str, node: Node) -> tuple[dict[str, Any], Any]:
        """What getattr answers for node (at sysfs-relative rel), and the same
        as a ``struct stat`` for readdirplus: interned, so built once per
        distinct (type and mode, nlink) and not again on every request."""
        kind = node.kind
        modes = tree.state.mode_overrides  # chmod's modes (tree.mode_of, without a call)
        if kind == "dir":
            st_mode = stat.S_IFDIR | (modes.get(rel, node.mode) if modes else node.mode)
            nlink, size = 2 + tree.subdir_count(rel, node), 0  # type: ignore[arg-type]
        elif kind == "link":
            st_mode, nlink, size = stat.S_IFLNK | 0o777, 1, 0
        else:  # a text attribute's size is a page (a class constant), a binary one's its own
            st_mode, nlink = stat.S_IFREG | (modes.get(rel, node.mode) if modes else node.mode), 1
            size = node.size  # type: ignore[union-attr]
        key = (st_mode, nlink, host.boot_time, size)
        return self._stat_pool.get(key) or self._stat_pool.add(key, self._stat_dict(st_mode, nlink, host, size))

    def _stat_dict(self, st_mode: int, nlink: int, host: Host | None, size: int = 0) -> dict[str, Any]:
        t = int((host.boot_time if host else 0) * 1e9)
        st = {"st_mode": st_mode, "st_nlink": nlink, "st_size": size, "st_uid": self.OWNER[0],
              "st_gid": self.OWNER[1], "st_atime": t, "st_mtime": t, "st_ctime": t}
        if stat.S_ISREG(st_mode):
            st["st_blksize"] = 4096
        return st

    @syscall
    def readlink(self, path: str) -> str:
        with self._lock_for(path):
            host, node, _ = self._resolve(path)
            if node.kind != "link":
                raise FuseOSError(errno.EINVAL)
            return node.target  # type: ignore[union-attr]

    @syscall
    def readdir(self, path: str, fh: Any) -> list[Any]:
        """mfusepy's own interface (where :mod:`.readdirplus` is not installed):
        the names and types of :meth:`readdir_plus`."""
        if self.multi and path == "/":
            return [".", ".."] + [(n, {"st_mode": stat.S_IFDIR}, 0) for n in sorted(self.hosts)]
        listing = self._cached_listing(path)
        return [(n.decode("utf-8", "surrogateescape"), st.st_mode, 0)
                for n, st in zip(listing.names, listing.stats, strict=True)]

    @syscall
    def readdir_plus(self, path: str, fh: Any) -> readdirplus.Listing | None:
        """A directory's entries in kernfs order with their attributes, for
        READDIRPLUS (``None``: the multi-host root, left to mfusepy)."""
        if (self.multi and path == "/") or not self.use_readdirplus:
            return None
        return self._cached_listing(path)

    def _cached_listing(self, path: str) -> readdirplus.Listing:
        """The listing of path, from the cache while the model has not moved."""
        host, tree, _ = self._split(path)
        if host is None or tree is None:
            raise FuseOSError(errno.ENOENT)
        with host.lock:
            key = (host.generation, self._chmods)
            hit = self._listings.get(path)
            if hit is None or hit.key != key:
                hit = self._listings[path] = self._listing(host, tree, path, key)
            elif self._unmarked and path in self._unmarked:
                self._unmarked.discard(path)
                self._mark_seen(path, (n.decode("utf-8", "surrogateescape") for n in hit.names[2:]))
            return hit

    def _mark_seen(self, path: str, names: Iterable[str]) -> None:
        """A listing's entries as seen: the kernel caches them without a LOOKUP."""
        with self._seen_lock:
            seen = self._seen.get(path)
            if seen is None:
                seen = self._seen[path] = set()
            seen.update(names)

    def prebuild(self) -> None:
        """Project a small tree whole before the mount answers: every
        directory's listing and every entry's attributes (in :attr:`warm`).

        kernfs builds its nodes when a device is added, not when it is first
        looked up; here the first walk of a fresh mount paid for each
        directory's projection (about twice the time of a dict-backed server
        on the default host). A tree with more than :data:`PREBUILD_MAX`
        entries (or more than :data:`PREBUILD_UNITS` devices, PCI functions
        and parents) is left lazy: it would cost mount time for paths a
        client may never ask for. Nothing is marked seen here: the kernel
        has cached nothing yet, and marking every path would cost each
        change an invalidation per path; a listing is marked when it is
        first served and a warm answer when it is taken, as after
        :meth:`_warm_siblings`."""
        for name, host in self.hosts.items():
            with host.lock:
                self._prebuild_one(host, self.trees[name], f"/{name}" if self.multi else "/")

    def _prebuild_one(self, host: Host, tree: SysfsTree, top: str) -> None:
        """Prebuild one host's tree (under its lock), or nothing if it is too big."""
        if len(host.devices) + len(host.pci.functions) + len(host.parents) > PREBUILD_UNITS:
            return
        key = (host.generation, self._chmods)
        todo, warmed = [top], {}
        built: list[tuple[str, readdirplus.Listing]] = []
        while todo:
            path = todo.pop()
            listing = self._listing(host, tree, path, key, mark=False)
            if not built:
                warmed[path.encode("utf-8", "surrogateescape")] = listing.stats[0]  # the top: its "."
            built.append((path, listing))
            head = "" if path == "/" else path
            for raw, st in zip(listing.names[2:], listing.stats[2:], strict=True):
                child = f"{head}/{raw.decode('utf-8', 'surrogateescape')}"
                warmed[child.encode("utf-8", "surrogateescape")] = st
                if stat.S_ISDIR(st.st_mode):
                    todo.append(child)
            if len(warmed) > PREBUILD_MAX or len(built) + len(self._listings) >= LISTING_CACHE_MAX:
                return  # a big tree stays lazy
        for path, listing in built:
            self._listings[path] = listing
            self._unmarked.add(path)
        if len(self.warm) + len(warmed) <= WARM_MAX:
            self.warm.update(warmed)

    def _listing(self, host: Host, tree: SysfsTree, path: str, key: tuple[int, int],
                 mark: bool = True) -> readdirplus.Listing:
        """Build a listing, and mark its entries as seen: the kernel caches
        them without a LOOKUP, so a change must invalidate them as if it had
        looked them up. Once per build is enough: only a change (which moves
        the generation, so the next readdir builds again) forgets seen paths."""
        _, node, rel = self._resolve(path)
        if node.kind != "dir":
            raise FuseOSError(errno.ENOTDIR)
        if len(self._listings) >= LISTING_CACHE_MAX:
            self._listings.clear()
        prefix = f"{rel}/" if rel else ""
        children = tree.listing(rel, node)  # type: ignore[arg-type]
        dot = self._stat(host, tree, rel, node)[1]  # libfuse sends no attributes for "." and ".."
        stat_of = self._stat
        stats = [dot, dot]
        stats += [stat_of(host, tree, prefix + name, child)[1] for name, child in children]
        names = tuple([name for name, _ in children])
        if mark:
            self._mark_seen(path, names)
        return readdirplus.build(names, stats, key)

    @syscall
    def access(self, path: str, amode: int) -> int:
        if self.multi and path == "/":
            return 0
        with self._lock_for(path):
            host, node, rel = self._resolve(path)
            mode = self._mode(host, rel, node)
        uid, gid = self._caller()
        if uid == 0:
            if amode & os.X_OK and node.kind != "dir" and not mode & 0o111:
                raise FuseOSError(errno.EACCES)
            return 0
        bits = self._dac_bits(mode, uid, gid)
        want = (4 if amode & os.R_OK else 0) | (2 if amode & os.W_OK else 0) | (1 if amode & os.X_OK else 0)
        if want & ~bits:
            raise FuseOSError(errno.EACCES)
        return 0

    # -- files ------------------------------------------------------------------
    @syscall
    def open(self, path: str, fi: Any) -> int:
        with self._lock_for(path):
            return self._open(path, fi)

    def _open(self, path: str, fi: Any) -> int:
        host, node, rel = self._resolve(path)
        _, tree, _ = self._split(path)
        assert tree is not None
        if node.kind != "file":
            raise FuseOSError(errno.EISDIR if node.kind == "dir" else errno.ELOOP)
        acc = fi.flags & os.O_ACCMODE
        want_read = acc in (os.O_RDONLY, os.O_RDWR)
        want_write = acc in (os.O_WRONLY, os.O_RDWR)
        uid, gid = self._caller()
        if uid != 0:  # the VFS permission check sysfs gets for free
            bits = self._dac_bits(self._mode(host, rel, node), uid, gid)
            if (want_read and not bits & 4) or (want_write and not bits & 2):
                raise FuseOSError(errno.EACCES)
        f = vfs.open_file(tree, rel, want_read, want_write, node)  # kernfs_fop_open's rules
        f.path = path
        f.privileged = uid == 0
        fh = next(self._fh_ids)
        self._handles[fh] = f
        fi.fh = fh
        fi.direct_io = 1
        return 0

    def _handle(self, fh: Any) -> vfs.OpenFile:
        h = self._handles.get(fh.fh if hasattr(fh, "fh") else fh)
        if h is None:
            raise FuseOSError(errno.EBADF)
        return h

    @syscall
    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        host, _, _ = self._split(path)
        with host.lock:  # type: ignore[union-attr]
            return vfs.read(self._handle(fh), size, offset)

    @syscall
    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        host, _, _ = self._split(path)
        with host.lock:  # type: ignore[union-attr]
            try:
                return vfs.write(self._handle(fh), data, offset)
            except KernelError as e:  # the writer sees only the errno, as from the kernel: the log says why
                log.warning("fakemdev: write to %s refused: %s: %s", path, e.errno_name, e.reason)
                raise

    def release(self, path: str, fh: Any) -> int:
        f = self._handles.pop(fh.fh if hasattr(fh, "fh") else fh, None)
        if f is not None:
            vfs.release(f)
        return 0

    @syscall
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self._resolve(path)
        return 0

    @syscall
    def chmod(self, path: str, mode: int) -> int:
        host, node, rel = self._resolve(path)
        if not self._may_change_metadata():
            raise FuseOSError(errno.EPERM)
        if node.kind != "link":
            with host.lock:
                state_of(host).mode_overrides[rel] = stat.S_IMODE(mode)
                self._chmods += 1  # listings handed out the old mode
                self._forget_answers()
            self._invalidate_paths((path,))
        return 0

    @syscall
    def chown(self, path: str, uid: int, gid: int) -> int:
        self._resolve(path)
        if not self._may_change_metadata():
            raise FuseOSError(errno.EPERM)
        return 0  # accepted; ownership is not simulated (always root)

    @syscall
    def utimens(self, path: str, times: Any = None) -> int:
        self._resolve(path)
        if not self._may_change_metadata():
            raise FuseOSError(errno.EPERM)
        return 0

    # -- namespace changes: sysfs refuses them all -------------------------------
    @syscall
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise FuseOSError(errno.EACCES)

    @syscall
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise FuseOSError(errno.EACCES)

    @syscall
    def mkdir(self, path: str, mode: int) -> int:
        raise FuseOSError(errno.EPERM)

    @syscall
    def rmdir(self, path: str) -> int:
        self._resolve(path)
        raise FuseOSError(errno.EPERM)

    @syscall
    def unlink(self, path: str) -> int:
        self._resolve(path)
        raise FuseOSError(errno.EPERM)

    @syscall
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self._resolve(old)
        raise FuseOSError(errno.EPERM)

    @syscall
    def symlink(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    @syscall
    def link(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)
