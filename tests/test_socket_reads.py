"""PDU reads in large pieces keep pynetdicom's contract: exactly the bytes asked for,
in order, whatever pieces they arrive in; what was read when the peer closes."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

from pynetdicom.transport import AssociationSocket

from dicom_node.net.patches import socket_reads


def _reader(sock: socket.socket) -> Any:
    return SimpleNamespace(socket=sock)


def test_reads_exactly_what_is_asked_across_many_small_writes() -> None:
    left, right = socket.socketpair()
    payload = bytes(range(256)) * 4096
    sender = threading.Thread(
        target=lambda: [left.sendall(payload[i : i + 3000]) for i in range(0, len(payload), 3000)]
    )
    sender.start()
    first = socket_reads.fast_recv(_reader(right), 6)
    rest = socket_reads.fast_recv(_reader(right), len(payload) - 6)
    sender.join()
    assert isinstance(first, bytearray) and isinstance(rest, bytearray)
    assert bytes(first + rest) == payload
    left.close()
    right.close()


def test_a_peer_that_closes_early_gives_what_was_read() -> None:
    left, right = socket.socketpair()

    def send_then_close() -> None:
        left.sendall(b"abcdef")
        time.sleep(0.05)
        left.close()

    threading.Thread(target=send_then_close).start()
    assert socket_reads.fast_recv(_reader(right), 100) == bytearray(b"abcdef")
    right.close()


def test_install_replaces_pynetdicoms_method_once() -> None:
    socket_reads.install()
    socket_reads.install()
    assert AssociationSocket.recv is socket_reads.fast_recv
