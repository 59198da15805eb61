"""Plain helpers shared by several test files (fixtures live in ``conftest.py``; a trained workspace built
without Dagster in ``_trained.py``)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server the test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
