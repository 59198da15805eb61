"""Features: one ``encounter_features`` table per cohort, built in DuckDB and Pandera-validated."""


import dagster as dg

from clinical_mlops.defs._schemas import COLUMN_SCHEMA, feature_table_schema, pandera_table_schema
from clinical_mlops.defs.partitions import validated_key
from clinical_mlops.defs.resources import WAREHOUSE_POOL, WarehouseResource
from clinical_mlops.features.columns import feature_sql_version
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

__all__ = ["build_encounter_features", "defs"]


def build_encounter_features(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "encounter_features"])

    @dg.asset(
        key=key,
        deps=[validated_key(spec.source)],
        group_name="features",
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        kinds={"duckdb", "sql", "pandera"},
        code_version=feature_sql_version(spec),
        pool=WAREHOUSE_POOL,
        description=f"{spec.title}: engineered features from source {spec.source} only, cohort exclusions applied, "
        f"label `{spec.target_column}`.",
        check_specs=[
            dg.AssetCheckSpec(
                "feature_schema_valid", asset=key, blocking=True,
                description="Every row satisfies the cohort's Pandera feature schema (types, ranges, no gaps), "
                "compiled to SQL from the schema; Pandera on failing rows and a sample; uniqueness in SQL.",
            )
        ],
        metadata={"cohort": spec.name, "source": spec.source, "contract_sha256": spec.contract_sha256,
                  "sql_files": ", ".join(spec.sql_files), "target_definition": spec.target_definition,
                  **feature_table_schema(spec)},
    )
    def encounter_features(warehouse: WarehouseResource) -> dg.MaterializeResult:
        from clinical_mlops.features import steps

        with warehouse.connect() as con:
            step = steps.build_features(con, spec)
        build, schema_check = step.build, step.schema_check
        return dg.MaterializeResult(
            metadata={
                "rows_in": build.rows_in,
                "rows_out": build.rows_out,
                "rows_excluded": dg.MetadataValue.json(build.rows_excluded),
                "label_prevalence": round(build.prevalence, 5),
                "n_features": len(spec.features),
                "table": spec.features_table,
                "dagster/row_count": build.rows_out,
                # the schema the rows were just checked against, converted by dagster-pandera
                COLUMN_SCHEMA: pandera_table_schema(step.schema),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="feature_schema_valid",
                    passed=step.schema_valid,
                    metadata={"failures": dg.MetadataValue.json(schema_check.failures),
                              "rows_checked": schema_check.rows_checked},
                )
            ],
        )

    return encounter_features


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_encounter_features(spec) for spec in load_all_cohorts()])
