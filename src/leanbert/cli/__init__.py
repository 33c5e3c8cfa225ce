"""The ``leanbert`` program: parses arguments, calls the API, prints errors as one line.

One sub-command per pipeline stage (SPEC Sec. 4). Each stage lives in its own module in this
package with two functions: ``register(subparsers)`` adds its parser, and the parser's
``func`` default runs it. This file is the only place that turns exceptions into exit codes:

- 0: success;
- 2: a usage or configuration error, bad input found before the work started, a file-system
  refusal (argparse's own usage errors exit 2 too);
- 1: a run that failed after it started (``errors.RunFailed``: the loss diverged, bad data
  turned up mid-run) or an unexpected internal error;
- 130: interrupted. Training commands catch the first SIGINT / SIGTERM, save a checkpoint
  and exit 130 (``train.engine.Interrupted``); a second signal during training stops at once
  without saving, and Ctrl-C anywhere else stops, both also with 130 (the last checkpoint,
  if any, still resumes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from leanbert import __version__

# Sub-command modules, in the order of the pipeline.
STAGES = [
    "tokenizer",
    "data",
    "pretrain",
    "distill",
    "finetune",
    "evaluate",
    "predict",
    "score",
    "export",
    "info",
    "bench",
    "report",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leanbert",
        description=(
            "Train BERT-style encoders for less compute (token dropping) and ship small, "
            "fast ones (MobileBERT). Run 'leanbert COMMAND --help' for each stage."
        ),
    )
    parser.add_argument("--version", action="version", version=f"leanbert {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        importlib.import_module(f"leanbert.cli.{stage}").register(sub)
    return parser


def _os_error(e: OSError) -> str:
    """One line for a file-system error: what happened to which path, and the fix."""
    where = e.filename or "a path"
    if isinstance(e, PermissionError):
        return f"permission denied: {where}; choose a location you can write to, or fix its permissions"
    if isinstance(e, FileExistsError):
        return f"{where} already exists; choose another path or remove it"
    if isinstance(e, NotADirectoryError):
        return f"{where}: a file stands where a directory is needed; choose another path"
    if isinstance(e, IsADirectoryError):
        return f"{where} is a directory; give a file path"
    if isinstance(e, FileNotFoundError):
        return f"{where} does not exist; check the path"
    reason = e.strerror or type(e).__name__
    return f"{where}: {reason}; check the path, the free disk space and the permissions"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or bool(os.environ.get("LEANBERT_DEBUG"))
    from leanbert._logs import quiet_third_party_logs

    quiet_third_party_logs()  # torchao's CPU-build import noise (see leanbert._logs)
    from leanbert.errors import LeanbertError

    try:
        result = args.func(args)
    except LeanbertError as e:
        if debug:
            raise
        print(f"leanbert {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"leanbert {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system refused: name the path and the fix
        if debug:
            raise
        print(f"leanbert {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # an unexpected failure: still one line unless --debug
        if debug:
            raise
        print(
            f"leanbert {args.command}: internal error: {type(e).__name__}: {e} "
            "(rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
