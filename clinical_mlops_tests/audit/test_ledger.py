"""The audit ledger: hash chain, signed head, tamper detection, concurrency, amendments, mirror."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from functools import partial
from pathlib import Path

import duckdb
import pytest

from clinical_mlops.cli import audit as cli_audit
from clinical_mlops.audit import ledger
from clinical_mlops.core.reporting import canonical_json
from clinical_mlops_tests.helpers import file_lines, run_cli

_cli = partial(run_cli, cli_audit.register)

KEY = "test-ledger-key"


@pytest.fixture(autouse=True)
def _ledger_key(monkeypatch):
    monkeypatch.setenv(ledger.KEY_ENV, KEY)
    monkeypatch.delenv(ledger.HEAD_ENV, raising=False)


def _fill(path: Path, n: int = 8) -> list[ledger.LedgerEntry]:
    return [
        ledger.append(path, event_type="asset_materialization", subject=f"asset:demo/{i}",
                      payload={"run_id": f"run-{i}", "rows": i * 10, "auroc": 0.7 + i / 100}, actor="tester")
        for i in range(1, n + 1)
    ]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _forged(seq: int, prev_hash: str, subject: str = "asset:forged") -> bytes:
    """A well-formed entry with a correct hash: what someone without the head key can still compute."""
    payload = {"run_id": "forged"}
    body = {"seq": seq, "ts": "2026-01-01T00:00:00.000000Z", "actor": "mallory", "event_type": "approval",
            "subject": subject, "payload": payload,
            "payload_sha256": hashlib.sha256(canonical_json(payload).encode()).hexdigest(), "prev_hash": prev_hash}
    body["hash"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return canonical_json(body).encode() + b"\n"


def test_entries_are_hash_chained_over_a_canonical_serialization(tmp_path):
    path = tmp_path / "ledger.jsonl"
    entries = _fill(path, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == ledger.GENESIS_HASH
    for previous, entry in zip(entries, entries[1:]):
        assert entry.prev_hash == previous.hash
    for line, entry in zip(file_lines(path), entries):
        data = json.loads(line)
        assert set(data) == set(ledger.FIELDS)
        body = {k: v for k, v in data.items() if k != "hash"}
        assert data["hash"] == hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
        assert data["payload_sha256"] == hashlib.sha256(canonical_json(data["payload"]).encode()).hexdigest()
        assert data["ts"].endswith("Z") and data["actor"] == "tester"
        assert line == canonical_json(data).encode() + b"\n"
    result = ledger.verify(path)
    assert result.ok and result.entries == 3 and result.head_seq == 3 and result.last_hash == entries[-1].hash


def test_entry_bytes_and_head_signature_are_pinned(tmp_path):
    """The bytes of a ledger and its head's MAC for fixed events: any change here breaks every recorded chain."""
    path = tmp_path / "ledger.jsonl"
    events = [
        ledger.Event("t", f"s{i}", {"a": i, "u": "é✓", "f": 0.1 * i, "n": None, "l": [1, (2, 3)],
                                     "nested": {"z": 1, "a": [True, False]}},
                     actor="me", ts=f"2026-01-01T00:00:0{i}.000000Z", natural_key=None if i % 2 else f"k{i}")
        for i in range(5)
    ]
    ledger.append_many(path, events, key="golden-key")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "bc2b0f353d1e0cbabfdec1a57f9614e98e2443cb938f60c4c82e7d9c39613cd8")
    head = ledger.read_head(path)
    assert (head["seq"], head["hash"], head["key_fingerprint"], head["mac"]) == (
        5, "05cb4943c9b35ff25fc34f2eeafdc0b50defef7ae19466adc069c38a5b311dd0", "dca1764f5c84f532",
        "21f0b22c926ead32c03ce8cbc0238cb52c5727b78dad5b5083487e62ed39009e")
    assert ledger.verify(path, key="golden-key").ok


def test_json_safe_makes_payload_values_plain_json():
    import datetime

    import numpy as np

    value = {"t": (1, 2), 3: float("nan"), "inf": float("inf"), "f": np.float64(0.5), "i": np.int64(7),
             "d": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2), "n": [None, True]}
    assert ledger.json_safe(value) == {"t": [1, 2], "3": None, "inf": None, "f": 0.5, "i": 7,
                                       "d": "2026-01-02T03:04:05", "day": "2026-01-02", "n": [None, True]}
    with pytest.raises(ledger.PayloadError, match=r"rows\[0\]: a list of 501 items looks like rows"):
        ledger.json_safe({"rows": [list(range(501))]}, "rows")
    with pytest.raises(ledger.PayloadError, match="payload.x: object is not JSON"):
        ledger.json_safe({"x": object()}, "payload")


def test_the_signing_key_is_the_argument_then_the_environment_then_the_development_key(monkeypatch):
    assert ledger.signing_key("given") == b"given" and ledger.signing_key(b"raw") == b"raw"
    assert ledger.signing_key() == KEY.encode()
    monkeypatch.delenv(ledger.KEY_ENV)
    assert ledger.signing_key() == ledger.DEVELOPMENT_KEY
    assert ledger.key_fingerprint(b"a") != ledger.key_fingerprint(b"b") and len(ledger.key_fingerprint(b"a")) == 16


def _change_byte(lines, k):
    line = lines[k - 1]
    at = line.index(b'"tester"') + 2
    lines[k - 1] = line[:at] + b"T" + line[at + 1:]
    return lines


def _delete(lines, k):
    del lines[k - 1]
    return lines


def _swap(lines, k):
    lines[k - 1], lines[k] = lines[k], lines[k - 1]
    return lines


def _insert_crafted(lines, k):
    previous = json.loads(lines[k - 2])["hash"]
    lines.insert(k - 1, _forged(k, previous))
    return lines


def _insert_duplicate(lines, k):
    lines.insert(k - 1, lines[0])
    return lines


@pytest.mark.parametrize(
    ("tamper", "position", "words"),
    [
        (_change_byte, 4, "altered"),
        (_delete, 4, "missing"),
        (_swap, 4, "reordered"),
        (_insert_crafted, 4, "inserted"),
        (_insert_duplicate, 4, "duplicated"),
    ],
    ids=["one-byte-changed", "entry-deleted", "two-entries-swapped", "entry-inserted", "entry-duplicated"],
)
def test_tampering_inside_the_chain_is_detected_at_its_position(tmp_path, tamper, position, words):
    path = tmp_path / "ledger.jsonl"
    _fill(path)
    _write(path, tamper(file_lines(path), position))
    result = ledger.verify(path)
    assert not result.ok
    assert result.first_bad_seq == position, result.problem
    assert words in result.problem


def test_a_forged_entry_appended_after_the_signed_head_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    entries = _fill(path)
    with open(path, "ab") as fh:
        fh.write(_forged(len(entries) + 1, entries[-1].hash))
    result = ledger.verify(path)
    assert not result.ok and result.first_bad_seq == len(entries) + 1
    assert "after the signed head" in result.problem


def test_a_truncated_file_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path)
    _write(path, file_lines(path)[:5])
    result = ledger.verify(path)
    assert not result.ok and result.first_bad_seq == 6 and "truncated" in result.problem


def test_a_file_cut_mid_entry_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    result = ledger.verify(path)
    assert not result.ok and result.first_bad_seq == 8 and "incomplete" in result.problem


def test_a_rewritten_chain_with_a_forged_head_is_detected(tmp_path):
    """Recomputing every hash after an edit defeats a bare chain; the keyed head does not verify."""
    path = tmp_path / "ledger.jsonl"
    _fill(path, 4)
    lines = file_lines(path)[:2]
    for seq in (3, 4):
        lines.append(_forged(seq, json.loads(lines[-1])["hash"], subject=f"asset:rewritten/{seq}"))
    _write(path, lines)
    last = json.loads(lines[-1])
    mallory_key = b"not-the-ledger-key"
    ledger.write_head(path, 4, last["hash"], mallory_key)
    result = ledger.verify(path)
    assert not result.ok and "another key" in result.problem
    ledger.head_path(path).write_text(json.dumps({"seq": 4, "hash": last["hash"], "key_fingerprint":
                                                  ledger.key_fingerprint(KEY.encode()), "mac": "0" * 64}))
    assert "signature does not verify" in ledger.verify(path).problem


def test_the_duckdb_mirror_localises_a_chain_rewritten_with_the_key(tmp_path):
    """Even an insider holding the key cannot rewrite history unnoticed: the mirror disagrees."""
    path = tmp_path / "ledger.jsonl"
    _fill(path, 6)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert ledger.mirror_to_duckdb(con, path).inserted == 6
    lines = file_lines(path)[:3]
    for seq in (4, 5, 6):
        lines.append(_forged(seq, json.loads(lines[-1])["hash"], subject=f"asset:rewritten/{seq}"))
    _write(path, lines)
    ledger.write_head(path, 6, json.loads(lines[-1])["hash"], KEY.encode())
    assert ledger.verify(path).ok, "the file alone is consistent"
    result = ledger.verify(path, con=con)
    assert not result.ok and result.first_bad_seq == 4 and "mirror" in result.problem


def test_an_edited_mirror_row_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 5)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ledger.mirror_to_duckdb(con, path)
    assert ledger.verify(path, con=con).ok
    con.execute("UPDATE audit.ledger SET hash = repeat('a', 64) WHERE seq = 2")
    result = ledger.verify(path, con=con)
    assert not result.ok and result.first_bad_seq == 2
    con.execute("UPDATE audit.ledger SET hash = (SELECT prev_hash FROM audit.ledger WHERE seq = 3) WHERE seq = 2")
    assert ledger.verify(path, con=con).ok
    con.execute("DELETE FROM audit.ledger WHERE seq = 4")
    result = ledger.verify(path, con=con)
    assert not result.ok and result.first_bad_seq == 4 and "lacks entry 4" in result.problem


def test_a_missing_head_or_another_key_fails_verification(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 3)
    assert not ledger.verify(path, key="another-key").ok
    ledger.head_path(path).unlink()
    result = ledger.verify(path)
    assert not result.ok and "head checkpoint is missing" in result.problem


def test_nothing_is_appended_to_a_tampered_ledger(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path)
    _write(path, file_lines(path)[:5])
    with pytest.raises(ledger.LedgerIntegrityError, match="signed head records entry 8"):
        ledger.append(path, event_type="x", subject="y")
    assert len(file_lines(path)) == 5


def test_reseal_recovers_from_an_interrupted_write_and_records_it(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 3)
    with open(path, "ab") as fh:
        fh.write(b'{"actor":"tester","event_type":"half')
    with pytest.raises(ledger.LedgerIntegrityError, match="incomplete entry"):
        ledger.append(path, event_type="x", subject="y")
    entry = ledger.reseal(path, reason="power loss during a run", actor="operator")
    assert entry.event_type == "ledger_resealed" and entry.seq == 4
    assert entry.payload["truncated_bytes"] > 0 and entry.payload["previous_head_seq"] == 3
    assert ledger.verify(path).ok
    _write(path, _swap(file_lines(path), 2))
    with pytest.raises(ledger.LedgerIntegrityError, match="cannot reseal"):
        ledger.reseal(path, reason="hide a swap")


def test_two_concurrent_writer_processes_and_threads_leave_one_valid_chain(tmp_path):
    path = tmp_path / "ledger.jsonl"
    go = tmp_path / "go"
    per_process = 150
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        os.environ[{ledger.KEY_ENV!r}] = {KEY!r}
        from clinical_mlops.audit import ledger
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        for i in range({per_process}):
            ledger.append({str(path)!r}, event_type="writer", subject="proc:" + sys.argv[1],
                          payload={{"i": i}}, natural_key=sys.argv[1] + ":" + str(i))
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b")]

    def thread_writer(name: str) -> None:
        for i in range(40):
            ledger.append(path, event_type="writer", subject=f"thread:{name}", payload={"i": i})

    threads = [threading.Thread(target=thread_writer, args=(n,)) for n in ("t1", "t2")]
    go.touch()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(w.wait(timeout=120) == 0 for w in writers)
    result = ledger.verify(path)
    assert result.ok, result.problem
    assert result.entries == 2 * per_process + 2 * 40
    entries = list(ledger.read_entries(path))
    assert [e.seq for e in entries] == list(range(1, result.entries + 1))
    by_writer = {}
    for entry in entries:
        by_writer.setdefault(entry.subject, []).append(entry.payload["i"])
    assert {k: len(v) for k, v in by_writer.items()} == {"proc:a": per_process, "proc:b": per_process,
                                                         "thread:t1": 40, "thread:t2": 40}
    assert all(values == sorted(values) for values in by_writer.values()), "each writer's entries keep their order"


def test_an_amendment_is_a_new_entry_that_keeps_the_prior_value(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 3)
    original_line = file_lines(path)[1]
    first = ledger.amend(path, 2, {"auroc": 0.9}, reason="transcription error", actor="qa")
    second = ledger.amend(path, 2, {"auroc": 0.91, "note": "rechecked"}, reason="second review", actor="qa")
    assert file_lines(path)[1] == original_line, "the amended entry is never rewritten"
    assert first.event_type == "amendment" and first.payload["amends_seq"] == 2
    assert first.payload["amends_hash"] == json.loads(original_line)["hash"]
    assert first.payload["prior_value"] == {"auroc": 0.72} and first.payload["new_value"] == {"auroc": 0.9}
    assert second.payload["prior_value"] == {"auroc": 0.9, "note": None}
    assert ledger.effective_payload(path, 2)["auroc"] == 0.91
    assert ledger.verify(path).ok
    with pytest.raises(ledger.LedgerError, match="reason"):
        ledger.amend(path, 2, {"auroc": 1.0}, reason=" ")
    with pytest.raises(ledger.LedgerError, match="no entry 99"):
        ledger.amend(path, 99, {"auroc": 1.0}, reason="x")


@pytest.mark.parametrize(
    "payload",
    [
        {"patient_key": "0123456789abcdef"},
        {"nested": {"encounter_ids": [1, 2, 3]}},
        {"scores": list(range(ledger.MAX_LIST_LENGTH + 1))},
        {"note": "SSN 123-45-6789"},
        {"blob": "x" * (ledger.MAX_PAYLOAD_BYTES + 1)},
        {"when": object()},
    ],
    ids=["identifier-key", "nested-identifier-list", "row-like-list", "ssn-value", "oversized", "not-json"],
)
def test_payloads_that_could_carry_patient_rows_are_refused(tmp_path, payload):
    path = tmp_path / "ledger.jsonl"
    with pytest.raises(ledger.PayloadError):
        ledger.append(path, event_type="x", subject="y", payload=payload)
    assert not path.exists() or path.stat().st_size == 0


def test_natural_keys_make_recording_idempotent(tmp_path):
    path = tmp_path / "ledger.jsonl"
    events = [ledger.Event("model_registered", f"model:m/{v}", {"v": v}, natural_key=f"mv:{v}") for v in (1, 2)]
    assert len(ledger.append_many(path, events)) == 2
    assert ledger.append_many(path, events) == []
    ledger.clear_key_index()  # a fresh process re-reads the keys from the file
    assert ledger.append_many(path, [*events, ledger.Event("model_registered", "model:m/3", {}, natural_key="mv:3")])[0].seq == 3


def test_mirror_is_incremental_and_idempotent(tmp_path):
    path = tmp_path / "ledger.jsonl"
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _fill(path, 4)
    assert ledger.mirror_to_duckdb(con, path).inserted == 4
    assert ledger.mirror_to_duckdb(con, path).inserted == 0
    _fill(path, 2)
    result = ledger.mirror_to_duckdb(con, path)
    assert (result.inserted, result.total) == (2, 6)
    rows = con.execute("SELECT seq, event_type, json_extract(payload_json, '$.run_id') FROM audit.ledger "
                       "ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, 7)) and rows[0][2] == '"run-1"'
    assert ledger.verify(path, con=con).ok


def test_audit_verify_command_exits_non_zero_and_names_the_first_bad_entry(tmp_path, capsys):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 5)
    assert _cli(["audit", "verify", "--ledger", str(path), "--no-mirror"]) == 0
    assert "ledger OK: 5 entries" in capsys.readouterr().out
    _write(path, _swap(file_lines(path), 3))
    assert _cli(["audit", "verify", "--ledger", str(path), "--no-mirror"]) == 1
    assert "FAILED at entry 3" in capsys.readouterr().out
    assert _cli(["audit", "verify", "--ledger", str(path), "--no-mirror", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_bad_seq"] == 3


def test_audit_amend_command_records_the_prior_value(tmp_path, capsys):
    path = tmp_path / "ledger.jsonl"
    _fill(path, 2)
    assert _cli(["audit", "amend", "--ledger", str(path), "--seq", "1", "--set", "rows=11",
                 "--reason", "recount"]) == 0
    assert "prior value {\"rows\": 10}" in capsys.readouterr().out
    assert ledger.effective_payload(path, 1)["rows"] == 11
