"""Landing: per source, one ``[source, raw_extract]`` partition per extract, versioned by the file's sha256."""


import dagster as dg

from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.ingestion.extract_checks import extract_check_spec
from clinical_mlops.defs.partitions import extract_partitions, raw_key
from clinical_mlops.defs.resources import WAREHOUSE_POOL, LandingZoneResource, WarehouseResource
from clinical_mlops.ingestion import landing, steps
from clinical_mlops.sources.contract import LoadedSource, load_all_sources

__all__ = ["build_raw_extract", "defs"]

def _gate(result: landing.LandingResult) -> dg.AssetCheckResult:
    return evidence_check(
        "no_direct_identifiers", result.gate_evidence(), blocking=True,
        metadata={
            "extract_id": result.extract_id,
            "gate_status": "passed" if result.identifier_free else "refused",
            "findings": len(result.findings),
            "findings_detail": dg.MetadataValue.json(result.gate_findings()),
            "columns_flagged": ", ".join(sorted({f.column for f in result.findings})) or "none",
            "identifier_kinds": ", ".join(sorted({f.identifier for f in result.findings})) or "none",
            "deidentification_mode": "safe_harbor",
        },
    )


def build_raw_extract(source: LoadedSource) -> dg.AssetsDefinition:
    """``[source, raw_extract]``: one partition per extract of the source, landed as text."""
    key = raw_key(source.name)
    gate = extract_check_spec(
        "no_direct_identifiers", asset=key, source=source.name, blocking=True,
        description="De-identification gate, per extract: no HIPAA Safe Harbor identifier in column names or values "
        "(names the column and the pattern, never the value), less the contract's declared exemptions. Blocks "
        "everything downstream of that extract.",
    )

    @dg.asset(
        key=key,
        partitions_def=extract_partitions(source.name),
        group_name="ingestion",
        kinds={"duckdb"},
        code_version=source.sha256[:12],
        pool=WAREHOUSE_POOL,
        check_specs=[gate],
        description=f"Extracts of source {source.name}, stored in ``raw.{source.name}`` exactly as in the file "
        "(text). Data version = sha256 of the file; the same bytes again are a no-op.",
        metadata={"source": source.name, "contract_sha256": source.sha256,
                  "landing_folder": f"data/landing/{source.name}/"},
    )
    def raw_extract(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing_zone: LandingZoneResource
    ) -> dg.MaterializeResult:
        extract_id = context.partition_key
        with step_failures(), warehouse.connect() as con:
            result = steps.land(con, landing_zone.path_for(source.name, extract_id), source, extract_id=extract_id)
        if result.status == "already_landed":
            context.log.info(f"{extract_id}: identical content already landed as {result.duplicate_of}; no-op")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(result.sha256),
            metadata={
                "source": source.name,
                "contract_sha256": source.sha256,
                "extract_id": extract_id,
                "sha256": result.sha256,
                "size_bytes": result.size_bytes,
                "status": result.status,
                "rows_landed": result.rows_landed,
                "file_rows": result.file_rows if result.file_rows is not None else -1,
                "duplicate_of": result.duplicate_of or "",
                "dagster/row_count": result.rows_landed,
            },
            check_results=[_gate(result)],
        )

    return raw_extract


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_raw_extract(source) for source in load_all_sources().values()])
