"""Plain helpers shared by several test files (fixtures live in ``conftest.py``; a trained workspace built
without Dagster in ``_trained.py``)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server the test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(register: Callable[[argparse._SubParsersAction], object], argv: list[str], *,
            prog: str | None = None) -> int:
    """Run ``argv`` through a parser holding only the subcommands ``register`` adds (one command group of the
    command line, without the rest of ``clinical-mlops``); the command's exit code."""
    parser = argparse.ArgumentParser(prog=prog)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
