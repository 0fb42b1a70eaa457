"""kernfs-shaped nodes: directories, attributes and symlinks.

The sysfs projection (:mod:`fakemdev.sysfs`) builds these lazily from the
model; every backend walks them and none re-implements layout rules.
Attributes mirror the kernel's ``struct device_attribute``: a mode plus
optional ``show``/``store`` callables.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

ShowFn = Callable[[], bytes]
StoreFn = Callable[[bytes], int]

ATTR_SIZE = 4096  # sysfs reports PAGE_SIZE for every attribute
MAX_STORE = 4096  # kernfs copies at most one page into store()


def kernfs_name_hash(name: str) -> int:
    """The hash kernfs sorts directory entries by (fs/kernfs/dir.c).

    Reproducing it gives the same readdir order as the real kernel, which
    the golden capture records for every directory.
    """
    h = 0
    mask = (1 << 64) - 1
    for c in name.encode("utf-8", "surrogateescape"):
        h = ((h + (c << 4) + (c >> 4)) * 11) & mask
    h = ((h * 0x61C8864680B583EB) & mask) >> 32  # end_name_hash -> hash_long(h, 32)
    h &= 0x7FFFFFFF
    if h < 2:
        h += 2
    if h >= 0x7FFFFFFF:
        h = 0x7FFFFFFF - 1
    return h


_hash_cache: dict[str, int] = {}


def name_hash(name: str) -> int:
    """:func:`kernfs_name_hash`, memoised: every listing and every readdir
    offset asks again for the same few thousand names."""
    h = _hash_cache.get(name)
    if h is None:
        if len(_hash_cache) > 500_000:
            _hash_cache.clear()
        h = _hash_cache[name] = kernfs_name_hash(name)
    return h


def readdir_order(names: Iterable[str]) -> list[str]:
    """Sort names into kernfs order (hash, then name)."""
    return sorted(names, key=lambda n: (name_hash(n), n))


class Attribute:
    """A sysfs attribute file (a text attribute: a regular file of size 4096).

    ``owner`` is the live object the file belongs to; when it dies, open file
    descriptors get ENODEV as kernfs's deactivated nodes do. ``binary`` and
    ``size`` are class constants here, so the hot paths read them without a
    call; :class:`BinAttribute` overrides both.
    """

    __slots__ = ("mode", "show", "store", "owner")
    kind = "file"
    binary = False
    size = ATTR_SIZE

    def __init__(self, mode: int, show: ShowFn | None = None,
                 store: StoreFn | None = None, owner: object = None) -> None:
        self.mode = mode
        self.show = show
        self.store = store
        self.owner = owner


class BinAttribute(Attribute):
    """A binary sysfs attribute (``struct bin_attribute``, fs/sysfs/file.c).

    Unlike a text attribute its reads and writes carry the file offset
    (sysfs_kf_bin_read/sysfs_kf_bin_write), its inode's i_size is the
    attribute's ``size`` (sysfs_add_bin_file -> __kernfs_create_file), and a
    read is not buffered by seq_file: every read(2) asks the attribute again.
    ``show`` gives the whole content as the caller may see it (it may be
    shorter than ``size``, as pci_read_config's 64 bytes for the unprivileged);
    ``write_at(data, offset)`` is the bin_attribute's ``write``.
    """

    __slots__ = ("size", "write_at")
    binary = True

    def __init__(self, mode: int, size: int, show: ShowFn | None = None,
                 write_at: Callable[[bytes, int], int] | None = None, owner: object = None) -> None:
        super().__init__(mode, show, None, owner)
        self.size = size
        self.write_at = write_at


class Link:
    """A symlink with a relative target, exactly as sysfs writes it."""

    __slots__ = ("target",)
    kind = "link"
    mode = 0o777

    def __init__(self, target: str) -> None:
        self.target = target


class Directory:
    """A directory computed on demand. Subclasses override :meth:`entries`
    (and :meth:`lookup` where a faster answer than building every entry
    exists, as for a parent with 10,000 devices: those set ``fast_lookup``,
    which tells :class:`~fakemdev.sysfs.SysfsTree` to call :meth:`lookup`
    rather than memoise :meth:`entries`)."""

    kind = "dir"
    mode = 0o755
    fast_lookup = False

    def entries(self) -> Mapping[str, Node]:  # pragma: no cover - abstract
        raise NotImplementedError

    def lookup(self, name: str) -> Node | None:
        return self.entries().get(name)

    def names(self) -> Iterable[str]:
        return self.entries().keys()

    def subdir_count(self) -> int:
        """Number of child directories (nlink = 2 + this)."""
        return sum(1 for n in self.entries().values() if n.kind == "dir")

    def listdir(self) -> list[str]:
        return readdir_order(self.names())

    def items(self) -> list[tuple[str, Node]]:
        """(name, node) of every entry in kernfs order, building each once."""
        entries = self.entries()
        return [(n, entries[n]) for n in readdir_order(entries)]


class StaticDir(Directory):
    """A directory whose entries are fixed when it is built."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Node]) -> None:
        self._entries = entries

    def entries(self) -> Mapping[str, Node]:
        return self._entries


class LazyDir(Directory):
    """A directory whose entries come from a callable each time it is read."""

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[], Mapping[str, Node]]) -> None:
        self._build = build

    def entries(self) -> Mapping[str, Node]:
        return self._build()


Node = Attribute | Link | Directory  # BinAttribute is an Attribute


def walk(root: Directory, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Yield (path, node) for every node under root, depth first, kernfs order."""
    for name, node in root.items():
        path = f"{prefix}/{name}"
        yield path, node
        if node.kind == "dir":
            yield from walk(node, path)  # type: ignore[arg-type]


def resolve(root: Directory, path: str) -> Node | None:
    """Find the node at an absolute, canonical path ('/' = root). No symlink
    following: the kernel resolves links itself before asking a filesystem."""
    node: Node = root
    for part in path.split("/"):
        if not part:
            continue
        if node.kind != "dir":
            return None
        nxt = node.lookup(part)  # type: ignore[union-attr]
        if nxt is None:
            return None
        node = nxt
    return node
