"""Landing: one ``raw_encounters`` partition per extract, versioned by the file's sha256."""


import dagster as dg

from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.partitions import extract_partitions
from clinical_mlops.defs.resources import WAREHOUSE_POOL, LandingZoneResource, WarehouseResource
from clinical_mlops.ingestion import landing, steps

NO_DIRECT_IDENTIFIERS = dg.AssetCheckSpec(
    "no_direct_identifiers",
    asset="raw_encounters",
    blocking=True,
    description="De-identification gate: no HIPAA Safe Harbor identifier in column names or values "
    "(names the column and the pattern, never the value). Blocks everything downstream.",
)


@dg.asset(
    partitions_def=extract_partitions,
    group_name="ingestion",
    kinds={"duckdb"},
    code_version="1",
    pool=WAREHOUSE_POOL,
    check_specs=[NO_DIRECT_IDENTIFIERS],
)
def raw_encounters(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing_zone: LandingZoneResource
) -> dg.MaterializeResult:
    """Encounters of one landed extract, stored in ``raw.encounters`` exactly as in the file (text).

    Data version = sha256 of the file; landing the same bytes again is a no-op.
    """
    extract_id = context.partition_key
    with step_failures(), warehouse.connect() as con:
        result = steps.land(con, landing_zone.path_for(extract_id), extract_id=extract_id)
    if result.status == "already_landed":
        context.log.info(f"{extract_id}: identical content already landed as {result.duplicate_of}; no-op")
    gate = dg.AssetCheckResult(
        check_name="no_direct_identifiers",
        passed=result.identifier_free,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "No direct identifiers found."
            if result.identifier_free
            else f"Direct identifiers found, extract not landed: {landing.describe_findings(result.findings)}"
        ),
        metadata={
            "findings": len(result.findings),
            "columns_flagged": ", ".join(sorted({f.column for f in result.findings})) or "none",
            "identifier_kinds": ", ".join(sorted({f.identifier for f in result.findings})) or "none",
            "deidentification_mode": "safe_harbor",
        },
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(result.sha256),
        metadata={
            "extract_id": extract_id,
            "sha256": result.sha256,
            "size_bytes": result.size_bytes,
            "status": result.status,
            "rows_landed": result.rows_landed,
            "duplicate_of": result.duplicate_of or "",
            "dagster/row_count": result.rows_landed,
        },
        check_results=[gate],
    )


