"""Fault-tolerant disk copies between hosts: chunks, a checksum per chunk, resume, end-to-end check.

Most failed moves fail in the network while big disk files are copied, so a copy here is a sequence
of independent chunks (one download and one upload stream each, through libvirt only):

1. stream chunk i from the source straight into the destination (a download piped into an upload;
   holes are not transferred) and fingerprint it on the way (sha256);
2. a finished upload stream is the destination daemon's acknowledgement of the chunk;
3. on a connection fault (the destination's daemon restarted, the network dropped) reconnect, read
   the last acknowledged chunk back from the destination and compare its fingerprint — stepping back
   further if it does not match — and carry on from the first chunk not known to be good, instead of
   starting over;
4. at the end read the whole destination file back (sparse again) and compare every chunk's
   fingerprint with the source's, and the file's length: the image is verified end to end. A chunk
   that differs is sent again once; a second mismatch fails the copy.

Bytes are counted as they really travel: `bytes_sent` is the data handed to upload streams (holes
cost nothing), `bytes_resent` what was sent more than once because of faults.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from inventory.hypervisor import HostUnreachable, OperationFailed
from inventory.hypervisor.storage import VolumeHost

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 32 * 1024 * 1024
#: how long a copy waits for a host to answer again after a fault before it gives up
RESUME_WAIT_S = 120.0
RECONNECT_POLL_S = 0.5


class TransferFailed(OperationFailed):
    """The copy could not be completed or did not verify."""


@dataclass
class TransferReport:
    source: str
    destination: str
    size: int = 0  # bytes of the file copied
    chunk_size: int = 0
    chunks: int = 0
    data_bytes: int = 0  # non-zero data in the file (what must travel at least once)
    bytes_read: int = 0  # data read from the source
    bytes_sent: int = 0  # data sent to the destination, resends included
    bytes_resent: int = 0
    bytes_verified: int = 0  # data read back from the destination to verify it
    faults: int = 0
    resumed_at: list[int] = field(default_factory=list)  # chunk index where each resume restarted
    digest: str = ""  # sha256 over the chunk digests, in order
    verified: bool = False
    seconds: float = 0.0
    verify_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DiskCopy:
    """Copy one volume file from one host to another (or within one host), chunk by chunk.

    `progress(done, report)` is called after every chunk with the logical bytes covered so far;
    `check()` is called before every chunk and while waiting for a host, and may raise to stop
    (cancel). Both hosts are `VolumeHost`s the caller owns (and closes).
    """

    def __init__(
        self,
        source: VolumeHost,
        source_path: str,
        destination: VolumeHost,
        destination_path: str,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        progress: Callable[[int, TransferReport], None] | None = None,
        check: Callable[[], None] | None = None,
        resume_wait_s: float = RESUME_WAIT_S,
    ) -> None:
        self.source = source
        self.source_path = source_path
        self.destination = destination
        self.destination_path = destination_path
        self.chunk_size = max(1024 * 1024, int(chunk_size) // (1024 * 1024) * 1024 * 1024)
        self.progress = progress
        self.check = check or (lambda: None)
        self.resume_wait_s = resume_wait_s
        self.report = TransferReport(source=source_path, destination=destination_path, chunk_size=self.chunk_size)
        self.digests: list[str] = []
        self._data: list[int] = []
        self._sent_once: list[int] = []

    # -- helpers

    def _range(self, index: int) -> tuple[int, int]:
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.report.size - offset)

    def _wait_for(self, *hosts: VolumeHost) -> None:
        """Reconnect to hosts after a fault, polling until they answer or the wait runs out (a cancel
        still stops the wait: `check()` runs on every attempt)."""
        deadline = time.monotonic() + self.resume_wait_s
        for host in hosts:
            while True:
                self.check()
                try:
                    host.reconnect()
                    break
                except HostUnreachable as exc:
                    if time.monotonic() > deadline:
                        raise TransferFailed(
                            f"The host stopped answering during the copy and did not come back within "
                            f"{self.resume_wait_s:.0f} s.",
                            raw=exc.raw,
                        ) from None
                time.sleep(RECONNECT_POLL_S)

    def _send(self, index: int) -> None:
        """Copy one chunk (one download piped into one upload); raises HostUnreachable on a fault."""
        offset, length = self._range(index)
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n

        try:
            result = self.source.copy_range(
                self.source_path,
                offset,
                length,
                to=self.destination,
                to_path=self.destination_path,
                extend=index == self.report.chunks - 1,
                sent=count,
            )
        finally:
            self.report.bytes_sent += sent
        self.digests[index] = result.digest
        self._data[index] = result.data_bytes
        # what one clean pass sends for this chunk; anything beyond it counts as re-sent
        self._sent_once[index] = result.sent
        self.report.bytes_read += result.data_bytes

    def _read_back(self, index: int) -> str:
        """The destination's fingerprint of one chunk (waits for the host after a fault)."""
        offset, length = self._range(index)
        while True:
            try:
                result = self.destination.copy_range(self.destination_path, offset, length)
                break
            except HostUnreachable:
                self.report.faults += 1
                self._wait_for(self.destination)
        self.report.bytes_verified += result.data_bytes
        return result.digest

    def _first_good(self, acked: int) -> int:
        """After a fault: the index from which to carry on. Reads back the last acknowledged chunk and
        steps back while the destination does not hold what was sent."""
        index = acked
        while index > 0:
            if self._read_back(index - 1) == self.digests[index - 1]:
                break
            index -= 1
        return index

    # -- the copy

    def run(self) -> TransferReport:
        """The copy, then the read-back. (libvirt refuses to upload into a volume that is being
        downloaded, so the read-back cannot overlap the writes; reading back on two connections at once
        measured slower here than one.)"""
        started = time.monotonic()
        report = self.report
        report.size = self.source.info(self.source_path).physical
        report.chunks = -(-report.size // self.chunk_size)
        self.digests = [""] * report.chunks
        self._data = [0] * report.chunks
        self._sent_once = [0] * report.chunks
        self._copy_all()
        verify_started = time.monotonic()
        self.verify()
        report.verify_seconds = round(time.monotonic() - verify_started, 3)
        report.data_bytes = sum(self._data)
        report.bytes_resent = max(0, report.bytes_sent - sum(self._sent_once))
        report.digest = hashlib.sha256("".join(self.digests).encode()).hexdigest()
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def _copy_all(self) -> None:
        report = self.report
        index = 0
        acked = 0  # chunks [0, acked) are written and acknowledged
        while index < report.chunks:
            self.check()
            try:
                self._send(index)
            except HostUnreachable as exc:
                report.faults += 1
                log.info("copy to %s broke at chunk %s: %s; resuming", self.destination_path, index, exc.raw)
                self._wait_for(self.source, self.destination)
                index = acked = self._first_good(acked)
                report.resumed_at.append(index)
                continue
            acked = index + 1
            if self.progress is not None:
                self.progress(min(report.size, acked * self.chunk_size), report)
            index += 1

    def verify(self) -> None:
        """The end-to-end check: the file's length, and every chunk read back from the destination and
        compared with the source's fingerprint. A chunk that differs is sent again once and read back
        again; a second mismatch fails the copy."""
        info = self.destination.info(self.destination_path)
        if info.physical < self.report.size:
            raise TransferFailed(f"The copy is shorter than the source ({info.physical} of {self.report.size} bytes).")
        for index in range(self.report.chunks):
            self.check()
            if self._read_back(index) == self.digests[index]:
                continue
            log.warning("chunk %s of %s differs after the copy; sending it again", index, self.destination_path)
            expected = self.digests[index]
            try:
                self._send(index)
            except HostUnreachable:
                self._wait_for(self.source, self.destination)
                self._send(index)
            if self.digests[index] != expected or self._read_back(index) != expected:
                raise TransferFailed(
                    f"Chunk {index} of {self.destination_path} does not match the source after a resend."
                )
        self.report.verified = True


def read_digest(host: VolumeHost, path: str, chunk_size: int = DEFAULT_CHUNK) -> tuple[str, int, int]:
    """(digest, file size, data bytes) of a volume file as a copy would fingerprint it."""
    size = host.info(path).physical
    digests = []
    data = 0
    for offset in range(0, size, chunk_size):
        result = host.copy_range(path, offset, min(chunk_size, size - offset))
        digests.append(result.digest)
        data += result.data_bytes
    return hashlib.sha256("".join(digests).encode()).hexdigest(), size, data
