"""``clinical-mlops source init NAME --from FILE``: draft a source contract from a sample to review."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_source_init_parser", "cmd_source_init"]


def _error(file: object, problem: str) -> int:
    print(f"error: {file}: {problem}", file=sys.stderr)
    return 2


def cmd_source_init(args: argparse.Namespace) -> int:
    """Draft ``<sources dir>/<NAME>.yaml`` from ``--from FILE``; 2 and one ``error:`` line on a bad file or name."""
    from clinical_mlops.sources.contract import CONTRACT_SUFFIX, sources_dir
    from clinical_mlops.sources.draft import DraftError, draft_contract

    target = sources_dir() / f"{args.name}{CONTRACT_SUFFIX}"
    if target.exists() and not (args.force or args.print):
        return _error(target, "already exists; review or remove it, or pass --force to overwrite it")
    try:
        draft = draft_contract(Path(args.source_file), args.name, max_vocabulary=args.max_vocabulary)
    except DraftError as error:
        return _error(error.file, error.problem)
    if args.print:
        print(draft.yaml_text, end="")
        print(draft.summary(), file=sys.stderr)
        return 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(draft.yaml_text, encoding="utf-8")
        os.replace(partial, target)
    except OSError as error:
        return _error(target, f"cannot be written ({error.strerror or error})")
    print(draft.summary())
    print(f"wrote {target}")
    print(f"next: review every field of {target.name}, then: "
          f"clinical-mlops land {args.source_file} --source {args.name}")
    return 0


def add_source_init_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``source init NAME --from FILE [--max-vocabulary N] [--force] [--print]`` to ``subparsers``."""
    source = subparsers.add_parser("source", help="work with one source contract (sources/<NAME>.yaml)")
    actions = source.add_subparsers(dest="source_command", required=True)
    init = actions.add_parser("init", help="draft a source contract from a sample file, for review")
    init.add_argument("name", metavar="NAME", help="the source's snake_case name (the contract file's stem)")
    init.add_argument("--from", dest="source_file", type=Path, required=True, metavar="FILE",
                      help="a sample extract (CSV; delimiter , ; TAB or | sniffed), read whole")
    init.add_argument("--max-vocabulary", type=int, default=50, metavar="N",
                      help="a text column with at most N distinct values becomes a category (default 50)")
    init.add_argument("--force", action="store_true", help="overwrite an existing contract file")
    init.add_argument("--print", action="store_true",
                      help="print the draft to stdout (summary to stderr) instead of writing the file")
    init.set_defaults(func=cmd_source_init)
    return init
