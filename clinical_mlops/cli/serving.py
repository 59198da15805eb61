"""``clinical-mlops serve``, ``api-key`` and ``prediction-log``: the scoring service from the command line."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

__all__ = [
    "LOOPBACK_NAMES",
    "cmd_api_key_create",
    "cmd_api_key_list",
    "cmd_api_key_revoke",
    "cmd_prediction_log_verify",
    "cmd_serve",
    "main",
    "register",
]

LOOPBACK_NAMES = {"localhost"}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from clinical_mlops.scoring import service as serving

    if not _is_loopback(args.host) and not args.allow_remote:
        _say(f"refusing to bind {args.host}: the service binds 127.0.0.1 unless --allow-remote is given "
             "(put TLS and a gateway in front of it first)")
        return 2
    config = serving.ServingConfig.from_environment(
        args.cohort,
        poll_seconds=args.poll_seconds,
        api_keys_path=Path(args.keys_file) if args.keys_file else None,
        log_root=Path(args.log_dir) if args.log_dir else None,
    )
    from clinical_mlops.scoring import api_keys

    if not api_keys.read_keys(config.api_keys_path):
        _say(f"note: no API key in {config.api_keys_path}; create one with `clinical-mlops api-key create --name NAME`")
    _say(f"Serving {args.cohort} on http://{args.host}:{args.port}  (docs: /docs, health: /healthz)")
    _say(f"Prediction log: {config.log_root / args.cohort}   champion poll: every {config.poll_seconds:g}s")
    serving.serve(config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _keys_path(args: argparse.Namespace) -> Path:
    from clinical_mlops.scoring import service as serving

    return Path(args.keys_file) if args.keys_file else serving.default_api_keys_path()


def cmd_api_key_create(args: argparse.Namespace) -> int:
    from clinical_mlops.scoring import api_keys

    path = _keys_path(args)
    try:
        key, record = api_keys.create_key(path, args.name)
    except api_keys.ApiKeyError as exc:
        _say(f"error: {exc}")
        return 1
    _say(f"Created key {record.key_id} for '{record.name}' (only its sha256 is stored in {path}).")
    _say("Store it now: it is shown once and cannot be recovered. Send it in the X-API-Key header.")
    print(key, flush=True)
    return 0


def cmd_api_key_list(args: argparse.Namespace) -> int:
    from clinical_mlops.scoring import api_keys

    try:
        records = api_keys.read_keys(_keys_path(args))
    except api_keys.ApiKeyError as exc:
        _say(f"error: {exc}")
        return 1
    for r in records:
        status = "active" if r.active else f"revoked {r.revoked_at}"
        print(f"{r.key_id}  {r.name:<30}  created {r.created_at}  {status}")
    if not records:
        _say("no API keys")
    return 0


def cmd_api_key_revoke(args: argparse.Namespace) -> int:
    from clinical_mlops.scoring import api_keys

    try:
        record = api_keys.revoke_key(_keys_path(args), args.key_id)
    except api_keys.ApiKeyError as exc:
        _say(f"error: {exc}")
        return 1
    _say(f"Revoked key {record.key_id} ('{record.name}'); the service stops accepting it within a second.")
    return 0


def cmd_prediction_log_verify(args: argparse.Namespace) -> int:
    from clinical_mlops.scoring import prediction_log, service as serving

    root = Path(args.log_dir) if args.log_dir else serving.default_prediction_log_root()
    result = prediction_log.verify_log(prediction_log.cohort_directory(root, args.cohort))
    empty = result.entries == 0
    summary = {
        "ok": result.ok and not empty,
        "evidence": "insufficient_evidence" if empty else ("pass" if result.ok else "fail"),
        "segments": len(result.segments),
        "entries": result.entries,
        "torn_tails": sum(1 for s in result.segments if s.torn_tail),
        "problems": list(result.problems),
    }
    print(json.dumps(summary, indent=2))
    if empty:
        _say(f"error: no prediction log entries for {args.cohort} under {root}: nothing to verify (an empty log is no "
             "evidence that the chain is intact)")
        return 1
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``api-key`` and ``prediction-log`` to the ``clinical-mlops`` command."""
    from clinical_mlops.core.settings import DEFAULT_COHORT

    cohort_help = f"the cohort spec (<source>_<cohort>; default {DEFAULT_COHORT})"
    serve = subparsers.add_parser("serve", help="run the scoring service (FastAPI + uvicorn) on 127.0.0.1")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--cohort", default=DEFAULT_COHORT, help=cohort_help)
    serve.add_argument("--poll-seconds", type=float, default=None,
                       help="how often to look for a newly promoted champion (default 10)")
    serve.add_argument("--keys-file", default=None, help="API keys file (default data/serving/api_keys.json)")
    serve.add_argument("--log-dir", default=None, help="prediction log root (default data/serving/prediction_log)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("api-key", help="manage the scoring service's API keys (stored hashed)")
    key_commands = keys.add_subparsers(dest="api_key_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("--name", required=True, help="the calling system, e.g. ehr-discharge-workflow")
    create.add_argument("--keys-file", default=None)
    create.set_defaults(func=cmd_api_key_create)
    listing = key_commands.add_parser("list", help="list key ids, names and status (never the keys)")
    listing.add_argument("--keys-file", default=None)
    listing.set_defaults(func=cmd_api_key_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--key-id", required=True)
    revoke.add_argument("--keys-file", default=None)
    revoke.set_defaults(func=cmd_api_key_revoke)

    log = subparsers.add_parser("prediction-log", help="the scoring service's hash-chained prediction log")
    log_commands = log.add_subparsers(dest="prediction_log_command", required=True)
    verify = log_commands.add_parser("verify", help="verify every segment's chain and the links between segments")
    verify.add_argument("--cohort", default=DEFAULT_COHORT, help=cohort_help)
    verify.add_argument("--log-dir", default=None)
    verify.set_defaults(func=cmd_prediction_log_verify)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m clinical_mlops.cli.serving …``), same subcommands as ``clinical-mlops``."""
    from clinical_mlops.core.settings import switch_off_telemetry

    switch_off_telemetry()
    parser = argparse.ArgumentParser(prog="clinical-mlops")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
