"""What every domain package stands on: where things live (settings), the DuckDB warehouse,
bounded-memory chunking, the one evidence rule of every gate (pass / fail / insufficient evidence), provenance facts, MLflow tracking and registry, and the shared
statistics and report helpers (the one bootstrap kernel, exact and binned, multiple-comparison correction,
canonical JSON, number format, page rendering). Nothing here knows about a particular domain; :mod:`.steps` holds what every step function shares
(its error type, log and report paths)."""

__all__ = [
    "bootstrap",
    "chunking",
    "evidence",
    "multiple_testing",
    "provenance",
    "reporting",
    "settings",
    "steps",
    "tracking",
    "warehouse",
    "yaml_files",
]
