"""A step's :class:`~clinical_mlops.core.steps.StepError` raised as the run failure Dagster shows."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from clinical_mlops.core.steps import StepError

__all__ = ["step_failures"]


@contextlib.contextmanager
def step_failures() -> Iterator[None]:
    """Raise a step's :class:`StepError` as ``dg.Failure``: same description, metadata and retry policy."""
    try:
        yield
    except StepError as exc:
        raise dg.Failure(description=exc.description, metadata=exc.metadata or None,
                         allow_retries=exc.allow_retries) from None
