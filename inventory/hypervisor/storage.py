"""Disk volumes on one host, and their bytes, through libvirt only (no ssh, no shared file system).

The portal copies disks itself for cold moves, backups and restores. Everything goes through the
daemons' storage APIs:

- reading: `vol.download` with `VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM`; the stream reports holes
  (`recvFlags(…, VIR_STREAM_RECV_STOP_AT_HOLE)` returns -3, `recvHole()` gives their length), so
  unallocated ranges of a file are never sent;
- writing: `vol.upload` with `VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM`; holes are sent as `sendHole`,
  which the receiving daemon turns into a seek, so the destination file stays sparse;
- converting: `pool.createXMLFrom` on one host, which runs `qemu-img convert` there (libvirt 9.0
  does this for dir pools whenever the formats differ). That is the only conversion libvirt offers
  — it cannot convert while streaming between hosts — so a foreign disk (vmdk, vhdx…) is converted
  on the source host into a staging volume next to it, and that volume is what is copied.

Copies are byte copies of the volume *file* (a qcow2 file is copied as the qcow2 file, not as the
guest-visible data), cut into ranges ("chunks"). One chunk is one download stream piped into one
upload stream, fingerprinted as it passes (`BlockHasher`: sha256 over its non-zero 64 KiB blocks
and their positions, so a hole and a run of written zeros fingerprint the same, whatever each host's
file system reports as allocated). A finished upload stream means the daemon has written the chunk,
which is what lets a caller resume after a fault at the first chunk not yet acknowledged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement, tostring

import libvirt

from .connection import DEFAULT_TIMEOUT_S, _open, translate
from .domxml import parse_xml, to_bytes
from .errors import HostUnreachable, HypervisorError, NotFound, OperationFailed
from .names import check_volume_name

#: the granularity at which zero data counts as a hole (and at which fingerprints are taken)
BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(BLOCK)
#: one receive call; libvirt's stream packets carry at most 256 KiB anyway
_RECV = 1024 * 1024
_HOLE = -3
_AGAIN = -2


@dataclass(frozen=True)
class VolumeInfo:
    pool: str
    name: str
    path: str
    format: str
    capacity: int  # what the guest sees
    allocation: int  # bytes really allocated on the host
    physical: int  # the file's size: what a byte copy has to cover

    def as_dict(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "capacity": self.capacity,
            "allocation": self.allocation,
            "physical": self.physical,
        }


@dataclass(frozen=True)
class ChunkResult:
    """What one range of a volume file held, as fingerprinted while it streamed past."""

    offset: int
    length: int
    digest: str  # sha256 over the non-zero 64 KiB blocks and their positions
    data_bytes: int  # bytes of the non-zero blocks
    sent: int  # data bytes handed to the destination stream (0 for a read-back)


class BlockHasher:
    """Fingerprint of one range, fed in stream order with data pieces and holes.

    The range is cut into 64 KiB blocks; all-zero blocks are skipped and every other block is hashed
    with its index. A hole and written zeros therefore fingerprint the same, so a copy compares equal
    to its source whatever each host's file system reports as allocated.
    """

    def __init__(self, offset: int, length: int) -> None:
        self.length = length
        self._hash = hashlib.sha256(f"{offset}:{length}".encode())
        self._pending = bytearray()  # the start of the current block
        self._index = 0  # index of the block `_pending` belongs to
        self.data_bytes = 0

    def _block(self, buf: bytes | bytearray, lo: int = 0, size: int = BLOCK) -> None:
        """Block number `_index` is buf[lo:lo+size]; zero check and hashing in place, without copies."""
        if not buf.startswith(_ZERO_BLOCK[:size], lo):
            self._hash.update(self._index.to_bytes(8, "little"))
            self._hash.update(memoryview(buf)[lo : lo + size])
            self.data_bytes += size
        self._index += 1

    def data(self, piece: bytes) -> None:
        start = 0
        if self._pending:
            start = min(len(piece), BLOCK - len(self._pending))
            self._pending += piece[:start]
            if len(self._pending) < BLOCK:
                return
            self._block(self._pending)
            self._pending = bytearray()
        whole = start + (len(piece) - start) // BLOCK * BLOCK
        for lo in range(start, whole, BLOCK):
            self._block(piece, lo)
        self._pending += piece[whole:]

    def hole(self, size: int) -> None:
        if self._pending:
            fill = min(size, BLOCK - len(self._pending))
            self._pending += bytes(fill)
            size -= fill
            if len(self._pending) == BLOCK:
                self._block(self._pending)
                self._pending = bytearray()
        self._index += size // BLOCK
        if size % BLOCK:
            self._pending = bytearray(size % BLOCK)

    def digest(self) -> str:
        if self._pending:
            self._block(self._pending, 0, len(self._pending))
            self._pending = bytearray()
        return self._hash.hexdigest()


def _volume_xml(name: str, capacity: int, fmt: str) -> str:
    vol = Element("volume")
    SubElement(vol, "name").text = check_volume_name(name)
    SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    # allocation 0: created sparse (qemu-img create for qcow2, a file with a hole for raw)
    SubElement(vol, "allocation", unit="bytes").text = "0"
    target = SubElement(vol, "target")
    SubElement(target, "format", type=fmt)
    return tostring(vol, encoding="unicode")


def _pool_xml(name: str, path: str) -> str:
    pool = Element("pool", type="dir")
    SubElement(pool, "name").text = name
    target = SubElement(pool, "target")
    SubElement(target, "path").text = path
    return tostring(pool, encoding="unicode")


class VolumeHost:
    """One host's storage through one libvirt connection, reopened by `reconnect()` after a fault.

    Every method raises the adapter's errors; `HostUnreachable` means the connection (or the daemon)
    went away and the same call may be retried after `reconnect()`.
    """

    def __init__(self, uri: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.uri = uri
        self.timeout = timeout
        self._conn: libvirt.virConnect | None = None

    # -- connection

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = _open(self.uri, self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    def reconnect(self) -> None:
        self.close()
        _ = self.conn

    def __enter__(self) -> VolumeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: libvirt.libvirtError, context: str) -> HypervisorError:
        """A stream that broke because the daemon went away is a reachability problem, not a refusal."""
        err = translate(exc, context)
        alive = False
        if self._conn is not None:
            with suppress(libvirt.libvirtError):
                alive = bool(self._conn.isAlive())
        if not alive and not isinstance(err, NotFound):
            self.close()
            return HostUnreachable(f"{context}: the host's libvirt daemon went away.", raw=err.raw, code=err.code)
        return err

    # -- volumes

    def _vol(self, path: str) -> libvirt.virStorageVol:
        try:
            return self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                # a file written by someone else (a backup job) appears only after a refresh
                self.refresh_pool_of(path)
                try:
                    return self.conn.storageVolLookupByPath(path)
                except libvirt.libvirtError as again:
                    raise self._error(again, f"finding {path}") from None
            raise self._error(exc, f"finding {path}") from None

    def refresh_pool_of(self, path: str) -> None:
        directory = path.rsplit("/", 1)[0]
        try:
            for pool in self.conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                target = parse_xml(pool.XMLDesc(0)).findtext("target/path", "")
                if target.rstrip("/") == directory.rstrip("/"):
                    with suppress(libvirt.libvirtError):
                        pool.refresh(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, "refreshing storage pools") from None

    def info(self, path: str) -> VolumeInfo:
        vol = self._vol(path)
        try:
            root = parse_xml(vol.XMLDesc(0))
            pool = vol.storagePoolLookupByVolume().name()
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"reading {path}") from None
        fmt_el = root.find("target/format")
        physical = to_bytes(root.find("physical"), "bytes")
        if not physical:
            with suppress(libvirt.libvirtError):
                physical = int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
        return VolumeInfo(
            pool=pool,
            name=vol.name(),
            path=vol.path(),
            format=fmt_el.get("type", "raw") if fmt_el is not None else "raw",
            capacity=to_bytes(root.find("capacity"), "bytes"),
            allocation=to_bytes(root.find("allocation"), "bytes"),
            physical=physical,
        )

    def exists(self, path: str) -> bool:
        try:
            self._vol(path)
        except NotFound:
            return False
        return True

    def create(self, pool_name: str, name: str, capacity: int, fmt: str) -> VolumeInfo:
        """A new sparse volume; refuses to reuse a name (the portal never overwrites a volume)."""
        pool = self._pool(pool_name)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise OperationFailed(f"A volume named {name} already exists in pool {pool_name}; it is not overwritten.")
        try:
            vol = pool.createXML(_volume_xml(name, capacity, fmt), 0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"creating {name} in {pool_name}") from None
        return self.info(vol.path())

    def create_target(self, pool_name: str, name: str) -> VolumeInfo:
        """An empty file to receive a byte copy of another volume file (any format): written from 0."""
        return self.create(pool_name, name, 0, "raw")

    def delete(self, path: str) -> bool:
        """Remove a volume; False when it was already gone."""
        try:
            vol = self._vol(path)
        except NotFound:
            return False
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"removing {path}") from None
        return True

    def convert(self, source_path: str, pool_name: str, name: str, fmt: str) -> VolumeInfo:
        """Convert a volume into a new one of format `fmt` in `pool_name` on this same host.

        libvirt runs `qemu-img convert` for this (zeros are skipped, so the result is sparse).
        """
        source = self._vol(source_path)
        pool = self._pool(pool_name)
        capacity = self.info(source_path).capacity
        try:
            vol = pool.createXMLFrom(_volume_xml(name, capacity, fmt), source, 0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"converting {source_path} to {fmt}") from None
        return self.info(vol.path())

    def _pool(self, name: str) -> libvirt.virStoragePool:
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"finding pool {name}") from None
        with suppress(libvirt.libvirtError):
            pool.refresh(0)
        return pool

    def pool_path(self, name: str) -> str:
        try:
            return parse_xml(self._pool(name).XMLDesc(0)).findtext("target/path", "")
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"reading pool {name}") from None

    def ensure_dir_pool(self, name: str, path: str) -> str:
        """A persistent, autostarted directory pool `name` at `path`, made if missing. Returns its path."""
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise self._error(exc, f"finding pool {name}") from None
            try:
                pool = self.conn.storagePoolDefineXML(_pool_xml(name, path), 0)
                pool.build(0)  # mkdir
                pool.setAutostart(1)
            except libvirt.libvirtError as exc2:
                raise self._error(exc2, f"creating pool {name}") from None
        try:
            if not pool.isActive():
                pool.create(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"starting pool {name}") from None
        return self.pool_path(name)

    # -- bytes

    def copy_range(
        self,
        path: str,
        offset: int,
        length: int,
        *,
        to: VolumeHost | None = None,
        to_path: str = "",
        extend: bool = False,
        sent: Callable[[int], None] | None = None,
    ) -> ChunkResult:
        """Stream [offset, offset+length) of a volume file, fingerprinting it on the way, into the same
        range of `to_path` on `to` (another host, or this one); without `to`, only read and fingerprint.

        Download and upload streams run at the same time and nothing larger than one stream packet is
        held in memory. Holes travel as holes. `extend`: the range is the file's end; a final hole is
        then closed with 4 KiB of zeros, because a hole only moves the write position and the copy
        would otherwise be shorter than the source file. `sent(n)` counts data handed to the upload.

        A broken stream raises `HostUnreachable` (from whichever side went away).
        """
        hasher = BlockHasher(offset, length)
        total = 0
        down = up = None
        side: VolumeHost = self
        try:
            vol = self._vol(path)
            down = self.conn.newStream(0)
            vol.download(down, offset, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
            if to is not None:
                side = to
                target = to._vol(to_path)
                up = to.conn.newStream(0)
                target.upload(up, offset, length, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            held_hole = 0  # a hole is sent when data follows it, so the last one can be closed
            while True:
                side = self
                data = down.recvFlags(_RECV, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if isinstance(data, int):
                    if data == _HOLE:
                        size = int(down.recvHole(0))
                        hasher.hole(size)
                        held_hole += size
                        continue
                    if data == _AGAIN:
                        time.sleep(0.001)
                        continue
                    raise OperationFailed(f"reading {path}: unexpected stream status {data}")
                if not data:
                    break
                hasher.data(data)
                if up is not None:
                    side = to  # type: ignore[assignment]
                    if held_hole:
                        up.sendHole(held_hole, 0)
                        held_hole = 0
                    up.send(data)
                    total += len(data)
                    if sent is not None:
                        sent(len(data))
            side = self
            down.finish()
            down = None
            if up is not None:
                side = to  # type: ignore[assignment]
                if held_hole and extend:
                    tail = min(4096, held_hole)
                    if held_hole > tail:
                        up.sendHole(held_hole - tail, 0)
                    up.send(bytes(tail))
                    total += tail
                    if sent is not None:
                        sent(tail)
                elif held_hole:
                    up.sendHole(held_hole, 0)
                up.finish()
                up = None
        except libvirt.libvirtError as exc:
            for stream in (down, up):
                if stream is not None:
                    with suppress(libvirt.libvirtError):
                        stream.abort()
            raise side._error(exc, f"copying {path}" if to is not None else f"reading {path}") from None
        return ChunkResult(
            offset=offset, length=length, digest=hasher.digest(), data_bytes=hasher.data_bytes, sent=total
        )
