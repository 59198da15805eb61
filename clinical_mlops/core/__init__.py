"""What every domain package stands on: where things live (settings), the DuckDB warehouse,
bounded-memory chunking, provenance facts, MLflow tracking and registry, and the shared
statistics and report helpers (bootstrap from counts, multiple-comparison correction,
canonical JSON, number format, page rendering). Nothing here knows about a particular domain."""

__all__ = [
    "binned_bootstrap",
    "chunking",
    "multiple_testing",
    "provenance",
    "reporting",
    "settings",
    "tracking",
    "warehouse",
]
