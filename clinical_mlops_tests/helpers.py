"""Plain helpers shared by several test files (fixtures live in ``conftest.py``; a trained workspace built
without Dagster in ``_trained.py``)."""

from __future__ import annotations

import argparse
import functools
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from clinical_mlops_tests.conftest import READMISSION, SYNTHETIC, synthetic_assets, synthetic_source

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


def ingest(defs, workspace, instance, extract_ids: Iterable[str], *, groups: set[str] | None = None,
           raise_on_error: bool = True) -> list:
    """Materialize the synthetic source's ingestion and validation assets (among :func:`synthetic_assets` of
    ``groups``) for each extract already in the landing zone, adding its partition first; the results, each
    asserted successful unless ``raise_on_error`` is false."""
    import dagster as dg

    extract_ids = list(extract_ids)
    instance.add_dynamic_partitions(f"{SYNTHETIC}_extracts", extract_ids)
    results = []
    for extract_id in extract_ids:
        result = dg.materialize(
            synthetic_assets(defs, groups), selection=dg.AssetSelection.groups("ingestion", "validation"),
            partition_key=extract_id, instance=instance, resources=workspace.resources(),
            raise_on_error=raise_on_error,
        )
        assert result.success or not raise_on_error
        results.append(result)
    return results


def materialize(defs, workspace, instance, keys, run_config=None, partition_key=None, *, groups: set[str],
                cohort: str = READMISSION):
    """Materialize ``keys`` (asset names of ``cohort``, or asset keys) among :func:`synthetic_assets` of
    ``groups``, without raising on a failed step."""
    import dagster as dg

    return dg.materialize(
        synthetic_assets(defs, groups),
        selection=dg.AssetSelection.assets(*[dg.AssetKey([cohort, k]) if isinstance(k, str) else k for k in keys]),
        instance=instance, resources=workspace.resources(), run_config=run_config or {},
        partition_key=partition_key, raise_on_error=False,
    )


def asset_checks(result) -> dict:
    """A Dagster run result's asset check evaluations by check name."""
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def file_lines(path: Path) -> list[bytes]:
    """The lines of a file, as bytes with their line ends (an append-only log as written)."""
    return path.read_bytes().splitlines(keepends=True)
