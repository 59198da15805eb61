"""Plain helpers shared by several test files (fixtures live in ``conftest.py``; a trained workspace built
without Dagster in ``_trained.py``)."""

from __future__ import annotations

import argparse
import functools
import socket
from collections.abc import Callable
from pathlib import Path

from clinical_mlops_tests.conftest import synthetic_source

TEST_PSEUDONYM_KEY = b"test-key-not-secret"
"""The pseudonymisation key the tests' environment sets (``CLINICAL_MLOPS_PSEUDONYM_KEY``)."""

_synthetic_source = functools.cache(synthetic_source)


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


def land(con, frame, path: Path, *, source=None) -> str:
    """Write ``frame`` to ``path`` as an extract and land it on ``source`` (the synthetic source unless given),
    asserting that it landed; its extract id."""
    from clinical_mlops.ingestion import landing

    frame.to_csv(path, index=False, lineterminator="\n")
    outcome = landing.land_extract(con, path, source or _synthetic_source())
    assert outcome.status == "landed", outcome
    return outcome.extract_id


def land_and_validate(con, frame, path: Path, *, source=None, pseudonym_key: bytes = TEST_PSEUDONYM_KEY) -> str:
    """:func:`land` ``frame``, then validate the extract with ``pseudonym_key``; its extract id."""
    from clinical_mlops.validation import rules as validation

    source = source or _synthetic_source()
    extract_id = land(con, frame, path, source=source)
    validation.validate_extract(con, source, extract_id, pseudonym_key=pseudonym_key)
    return extract_id
