"""``python -m clinical_mlops.cli``: the same as the ``clinical-mlops`` command."""

from clinical_mlops.cli.main import main

__all__: list[str] = []

raise SystemExit(main())
