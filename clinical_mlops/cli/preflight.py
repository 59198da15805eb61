"""Before any command touches data: every source contract and cohort file loads, or one line says which
file and field is wrong; and which source a given file belongs to."""

from __future__ import annotations

from pathlib import Path

__all__ = ["Preflight", "preflight", "resolve_source"]


class Preflight:
    """The loaded sources and cohorts, or the one-line reason they cannot be used."""

    def __init__(self) -> None:
        from clinical_mlops.features.cohort import CohortSpecError, load_all_cohorts
        from clinical_mlops.sources.contract import ContractError, load_all_sources

        self.error: str | None = None
        self.sources, self.cohorts = {}, []
        try:
            self.sources = load_all_sources()
            self.cohorts = load_all_cohorts()
        except (ContractError, CohortSpecError) as error:
            self.error = str(error)

    def cohorts_of(self, source: str) -> list:
        return [spec for spec in self.cohorts if spec.source == source]


def preflight() -> Preflight:
    return Preflight()


def resolve_source(checked: Preflight, path: Path, name: str | None):
    """The named source, or the one contract whose header the file matches; ValueError with one line."""
    from clinical_mlops.ingestion import landing
    from clinical_mlops.sources.matching import match_header

    if name is not None:
        if name not in checked.sources:
            raise ValueError(f"no source named {name!r} (sources: {', '.join(checked.sources) or 'none'})")
        return checked.sources[name]  # the landing step checks the header (and the run records a refusal)
    return match_header(landing.read_header(path), checked.sources, file_name=path.name,
                        sha256=landing.file_sha256(path))
