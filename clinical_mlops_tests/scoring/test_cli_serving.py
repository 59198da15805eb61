"""``clinical-mlops api-key``, ``prediction-log verify`` and ``serve``'s guard, through their argparse wiring."""

from __future__ import annotations

import json
from functools import partial

import pytest

from clinical_mlops.scoring import api_keys, prediction_log
from clinical_mlops.cli import serving as cli_serving
from clinical_mlops_tests.helpers import run_cli

_run = partial(run_cli, cli_serving.register)


def test_api_key_create_prints_the_key_once_and_stores_only_its_hash(tmp_path, capsys):
    keys = tmp_path / "api_keys.json"
    assert _run(["api-key", "create", "--name", "ehr-discharge", "--keys-file", str(keys)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cmk_") and len(key) > 40
    stored = keys.read_text()
    assert key not in stored and api_keys.key_sha256(key) in stored
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    store = api_keys.ApiKeyStore(keys)
    record = store.authenticate(key)
    assert record is not None and record.name == "ehr-discharge"
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert _run(["api-key", "list", "--keys-file", str(keys)]) == 0
    listing = capsys.readouterr().out
    assert record.key_id in listing and key not in listing


def test_a_second_active_key_with_the_same_name_is_refused(tmp_path, capsys):
    keys = tmp_path / "api_keys.json"
    assert _run(["api-key", "create", "--name", "lab", "--keys-file", str(keys)]) == 0
    assert _run(["api-key", "create", "--name", "lab", "--keys-file", str(keys)]) == 1
    assert "revoke it first" in capsys.readouterr().err


def test_a_revoked_key_stops_working(tmp_path, capsys):
    keys = tmp_path / "api_keys.json"
    _run(["api-key", "create", "--name", "old-system", "--keys-file", str(keys)])
    key = capsys.readouterr().out.strip()
    store = api_keys.ApiKeyStore(keys, recheck_seconds=0)
    record = store.authenticate(key)
    assert _run(["api-key", "revoke", "--key-id", record.key_id, "--keys-file", str(keys)]) == 0
    assert store.authenticate(key) is None
    assert _run(["api-key", "revoke", "--key-id", record.key_id, "--keys-file", str(keys)]) == 1


def test_serve_refuses_a_non_loopback_address_without_allow_remote(capsys):
    assert _run(["serve", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


@pytest.mark.parametrize("tamper, code", [(False, 0), (True, 1)])
def test_prediction_log_verify_exit_code(tmp_path, capsys, tamper, code):
    writer = prediction_log.PredictionLogWriter(tmp_path, "synthetic_diabetes130_readmission_30d")
    writer.append(prediction_log.KIND_PREDICTION, {"request_id": "a", "response": {"status": 200, "risk": 0.1}})
    writer.close()
    if tamper:
        writer.path.write_bytes(writer.path.read_bytes().replace(b'"risk":0.1', b'"risk":0.9'))
    assert _run(["prediction-log", "verify", "--log-dir", str(tmp_path)]) == code
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (not tamper) and report["entries"] >= (1 if tamper else 3)
