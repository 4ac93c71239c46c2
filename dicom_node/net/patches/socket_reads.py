"""PDUs read from the socket in large pieces instead of pynetdicom's 4 KiB loop.

pynetdicom 3's ``AssociationSocket.recv`` reads a PDU 4096 bytes at a time and grows a
``bytearray`` with each piece: a 512 KiB CT slice (sent by DCMTK in 128 KiB P-DATA
PDUs) costs 128 ``recv`` calls, each taking and releasing the GIL beside the handler
thread. Profiled with py-spy on the ingest benchmark, the DUL thread spent about 1 ms
per instance there (under the profiler; docs/benchmarks.md). ``fast_recv`` keeps the
method's contract — block until ``nr_bytes`` have been read, return them as a
``bytearray``, return what was read so far when the peer closes — but reads straight
into one buffer of the final size with ``recv_into``, as much as the kernel has each
time.

``install`` checks that pynetdicom's method is still the one this replaces (by its
qualified name and signature) and refuses to patch anything else.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any

from pynetdicom.transport import AssociationSocket

_ORIGINAL = AssociationSocket.recv


def fast_recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv``: ``nr_bytes`` from the socket, fewer only if it closes."""
    sock: socket.socket = self.socket  # type: ignore[assignment]
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    read = 0
    try:
        while read < nr_bytes:
            count = sock.recv_into(view[read:], nr_bytes - read)
            if not count:
                break
            read += count
    finally:
        view.release()
    if read < nr_bytes:
        del buffer[read:]
    return buffer


def install() -> None:
    """Gives pynetdicom's association sockets ``fast_recv`` (idempotent)."""
    current: Any = AssociationSocket.recv
    if current is fast_recv:
        return
    expected = ("self", "nr_bytes")
    if (
        current is not _ORIGINAL
        or current.__qualname__ != "AssociationSocket.recv"
        or tuple(inspect.signature(current).parameters) != expected
    ):
        raise RuntimeError(
            "pynetdicom's AssociationSocket.recv is not the one "
            "dicom_node.net.patches.socket_reads replaces; refusing to patch it"
        )
    AssociationSocket.recv = fast_recv  # type: ignore[method-assign]
