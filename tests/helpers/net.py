"""A free TCP port for torchrun's rendezvous, so that concurrent test runs never collide."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS reports free now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
