"""The scoring service's files, as a resource: where its API keys and prediction log live."""

from pathlib import Path

import dagster as dg


class ServingResource(dg.ConfigurableResource):
    """Folder of the scoring service: ``api_keys.json`` and ``prediction_log/<cohort>/*.jsonl``."""

    api_keys_path: str
    prediction_log_dir: str

    @property
    def log_root(self) -> Path:
        return Path(self.prediction_log_dir)


def default_serving_resource() -> ServingResource:
    from clinical_mlops import api_keys, prediction_log

    return ServingResource(
        api_keys_path=str(api_keys.default_keys_path()),
        prediction_log_dir=str(prediction_log.default_root()),
    )
