"""The hash-chained prediction log: durable appends, every form of tampering detected, ingestion."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from clinical_mlops.scoring import prediction_log
from clinical_mlops.core import warehouse
from clinical_mlops_tests.helpers import file_lines

COHORT = "synthetic_diabetes130_readmission_30d"


def _write(root, n: int, *, close: bool = True) -> prediction_log.PredictionLogWriter:
    writer = prediction_log.PredictionLogWriter(root, COHORT)
    for i in range(n):
        writer.append(prediction_log.KIND_PREDICTION, {"request_id": f"r{i}", "features": {"x": float(i)},
                                                        "response": {"status": 200, "risk": i / 100}})
    if close:
        writer.close()
    return writer


def test_an_entry_is_this_exact_line_and_hash():
    """The chain's bytes, pinned: a refactor must not change one byte of a line or a hash."""
    record = {"request_id": "r1", "features": {"x": 1.5, "ü": "é"}, "response": {"status": 200, "risk": 0.125}}
    entry = prediction_log.seal(1, prediction_log.KIND_PREDICTION, record, prediction_log.GENESIS_HASH,
                                ts="2026-01-01T00:00:00.000000Z")
    body = ('{"kind":"prediction","prev_hash":"' + "0" * 64 + '","record":{"features":{"x":1.5,"ü":"é"},'
            '"request_id":"r1","response":{"risk":0.125,"status":200}},"seq":1,"ts":"2026-01-01T00:00:00.000000Z"}')
    assert entry.hash == hashlib.sha256(body.encode()).hexdigest() == prediction_log.entry_hash(entry.as_dict())
    assert entry.line() == ('{"hash":"' + entry.hash + '",' + body[1:] + "\n").encode()


def test_a_clean_log_verifies_and_links_its_segments(tmp_path):
    first = _write(tmp_path, 5)
    second = _write(tmp_path, 3)
    result = prediction_log.verify_log(prediction_log.cohort_directory(tmp_path, COHORT))
    assert result.ok and result.entries == (5 + 2) + (3 + 2)  # open + entries + close per segment
    opening = result.segments[1].opening
    assert opening["previous_segment"] == first.segment
    assert opening["previous_head_seq"] == 7 and second.segment != first.segment


def _tamper(path, how: str) -> int:
    """Apply one kind of tampering; return the seq where verification must first fail."""
    lines = file_lines(path)
    if how == "change_a_byte":
        entry = json.loads(lines[3])
        entry["record"]["response"]["risk"] = 0.99
        lines[3] = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
        bad = 4
    elif how == "delete_an_entry":
        del lines[2]
        bad = 3
    elif how == "insert_an_entry":
        forged = prediction_log.seal(3, "prediction", {"request_id": "forged"}, json.loads(lines[1])["hash"])
        lines.insert(2, forged.line())
        bad = 4  # the forged entry itself chains correctly; the displaced one does not
    elif how == "swap_two_entries":
        lines[2], lines[3] = lines[3], lines[2]
        bad = 3
    elif how == "append_a_forged_entry":
        last = json.loads(lines[-1])
        forged = {**last, "seq": last["seq"] + 1, "kind": "prediction", "record": {"request_id": "forged"}}
        lines.append((json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n").encode())
        bad = last["seq"] + 1
    else:  # pragma: no cover
        raise ValueError(how)
    path.write_bytes(b"".join(lines))
    return bad


@pytest.mark.parametrize("how", ["change_a_byte", "delete_an_entry", "insert_an_entry", "swap_two_entries",
                                 "append_a_forged_entry"])
def test_every_form_of_tampering_is_detected_at_its_position(tmp_path, how):
    writer = _write(tmp_path, 6)
    bad = _tamper(writer.path, how)
    result = prediction_log.verify_segment(writer.path)
    assert not result.ok
    assert result.first_bad_seq == bad, result.problem


def test_a_torn_last_line_is_reported_but_not_tampering(tmp_path):
    writer = _write(tmp_path, 4, close=False)
    with open(writer.path, "ab") as handle:
        handle.write(b'{"seq": 6, "ts": "2026')  # a crash mid-write: never acknowledged
    result = prediction_log.verify_segment(writer.path)
    assert result.ok and result.torn_tail and result.entries == 5


def test_deleting_a_whole_segment_is_detected_by_the_next_ones_link(tmp_path):
    first = _write(tmp_path, 2)
    _write(tmp_path, 2)
    first.path.unlink()
    result = prediction_log.verify_log(prediction_log.cohort_directory(tmp_path, COHORT))
    assert not result.ok and "is missing" in result.problems[0]


def test_concurrent_appends_form_one_chain_and_all_are_durable(tmp_path):
    writer = prediction_log.PredictionLogWriter(tmp_path, COHORT)
    entries = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(50):
            entry = writer.append(prediction_log.KIND_PREDICTION, {"request_id": f"{t}-{i}"})
            with lock:
                entries.append(entry)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every append returned after its entry was on disk: all 400 are in the file already
    on_disk = {json.loads(line)["hash"] for line in file_lines(writer.path)}
    assert {e.hash for e in entries} <= on_disk
    assert writer.fsyncs < writer.entries_written  # group commit: fewer fsyncs than entries
    writer.close()
    result = prediction_log.verify_segment(writer.path)
    assert result.ok and result.entries == 400 + 2


def test_a_submitted_entry_is_on_disk_when_its_future_resolves(tmp_path):
    """``submit`` (the service's non-blocking path) acknowledges only what is written and fsync'ed."""
    writer = prediction_log.PredictionLogWriter(tmp_path, COHORT)
    futures = [writer.submit(prediction_log.KIND_PREDICTION, {"request_id": f"s{i}"}) for i in range(100)]
    for future in futures:
        entry = future.result(timeout=30)
        assert entry.line() in file_lines(writer.path)
        assert not future.cancel()  # once queued, an entry is logged whatever the caller does
    assert [f.result().seq for f in futures] == list(range(2, 102))  # after segment_open, in submission order
    writer.close()
    late = writer.submit(prediction_log.KIND_PREDICTION, {"request_id": "late"})
    with pytest.raises(prediction_log.PredictionLogClosed):
        late.result(timeout=5)
    assert prediction_log.verify_segment(writer.path).ok


def test_a_closed_writer_refuses_appends(tmp_path):
    writer = _write(tmp_path, 1)
    with pytest.raises(prediction_log.PredictionLogClosed):
        writer.append(prediction_log.KIND_PREDICTION, {"request_id": "late"})


# ---------------------------------------------------------------------------------------------
# ingestion into DuckDB
# ---------------------------------------------------------------------------------------------


def test_ingestion_is_incremental_and_idempotent(tmp_path):
    root = tmp_path / "log"
    writer = _write(root, 3, close=False)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        first = prediction_log.ingest(con, root, COHORT)
        assert first.ok and first.new_entries == 4 and first.total_predictions == 3
        writer.append(prediction_log.KIND_PREDICTION, {"request_id": "late", "encounter_id": 7,
                                                        "response": {"status": 200, "risk": 0.5}})
        writer.close()
        second = prediction_log.ingest(con, root, COHORT)
        assert second.ok and second.new_entries == 2 and second.total_predictions == 4
        third = prediction_log.ingest(con, root, COHORT)
        assert third.ok and third.new_entries == 0
        row = con.execute("SELECT encounter_id, risk, http_status FROM monitoring.prediction_log "
                          "WHERE request_id = 'late'").fetchall()
    assert row == [(7, 0.5, 200)]


@pytest.mark.parametrize("how", ["truncate", "rewrite"])
def test_tampering_after_ingestion_is_detected_on_the_next_run(tmp_path, how):
    root = tmp_path / "log"
    writer = _write(root, 5)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        assert prediction_log.ingest(con, root, COHORT).ok
        lines = file_lines(writer.path)
        if how == "truncate":  # drop the tail: invisible to the chain alone, visible against the ingested head
            writer.path.write_bytes(b"".join(lines[:-2]))
        else:
            entry = json.loads(lines[2])
            entry["record"]["response"]["risk"] = 0.0
            entry["hash"] = prediction_log.entry_hash(entry)  # a careful forger re-hashes the entry...
            lines[2] = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
            writer.path.write_bytes(b"".join(lines))  # ...which breaks the next entry's prev_hash
        summary = prediction_log.ingest(con, root, COHORT)
        assert not summary.ok and summary.problems
        again = prediction_log.ingest(con, root, COHORT)
    assert not again.ok, "a broken segment stays flagged"
