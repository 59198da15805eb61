"""What the ingestion asset does, as a plain function (no Dagster): ``[source, raw_extract]``."""

from __future__ import annotations

from pathlib import Path

import duckdb

from clinical_mlops.core.chunking import bound_memory
from clinical_mlops.core.steps import StepError
from clinical_mlops.ingestion import landing
from clinical_mlops.sources.contract import LoadedSource

__all__ = ["land"]


def land(
    con: duckdb.DuckDBPyConnection, path: Path, source: LoadedSource, *, extract_id: str | None = None
) -> landing.LandingResult:
    """``[source, raw_extract]``: land one extract file into ``raw.<source>`` as text, versioned by its sha256.

    Identical bytes landed again are a no-op (status ``already_landed``); identifiers found make
    it ``rejected`` with the findings. A file that cannot be read as the declared format raises
    :class:`StepError` (no retry: the same file fails the same way) and lands nothing.
    """
    extract_id = extract_id or landing.extract_id_for(path)
    bound_memory(con, preserve_insertion_order=True)  # row numbers follow the file's lines
    try:
        return landing.land_extract(con, path, source, extract_id=extract_id)
    except landing.ExtractFormatError as exc:
        raise StepError(f"Extract {extract_id} refused: {exc}. Nothing was landed in source {source.name}.",
                        metadata={"extract_id": extract_id, "source": source.name}, allow_retries=False) from None
