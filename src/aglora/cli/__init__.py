"""Command-line interface: the `aglora` subcommands (stages, run, demo, eval, bench, ban, ...).

The only place that parses arguments or prints: library code reports progress through the
`aglora` logger, which `main` sends to standard output. Input problems are printed as one line
(`aglora: error: ...`) with exit status 2; an interrupted run exits 130 and resumes when rerun.

Under `accelerate launch` (docs/scale-out.md) only the main process logs and prints; the other
processes stay silent but for their own errors, and only `LAUNCHABLE` commands may be launched.
"""

from __future__ import annotations

import argparse
import logging
import sys

from aglora.cli import authoring, bench, controlled, export, recommend, run
from aglora.errors import AgloraError, disk_problem
from aglora.runtime.lock import release_all
from aglora.runtime.processes import MainProcessFailed, end, ranks

COMMANDS = (run, authoring, bench, controlled, recommend,
            export)  # each: add_parsers(sub), handles(args)


class _Stdout(logging.Handler):
    """Progress lines to whatever `sys.stdout` is at the time (so captured output sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


def setup_logging() -> None:
    logger = logging.getLogger("aglora")
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        logger.addHandler(_Stdout())
    logger.setLevel(logging.INFO if ranks().is_main else logging.ERROR)
    logger.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aglora", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if ranks().launched and args.command not in run.LAUNCHABLE:
            raise AgloraError(f"`aglora {args.command}` does not run under accelerate launch; "
                              f"launch one of: {', '.join(run.LAUNCHABLE)}")
        args.handler(args)
    except MainProcessFailed:  # the main process has printed why
        return 2
    except AgloraError as exc:
        print(f"aglora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aglora: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        problem = disk_problem(exc)  # a full or read-only disk (errors.DISK_ERRORS); else a bug
        if problem is None:
            raise
        print(f"aglora: error: {problem} and rerun the same command (finished stages are kept)",
              file=sys.stderr)
        return 2
    finally:
        release_all()  # the run-directory locks this command took
        end()  # the process group of a launch
    return 0


if __name__ == "__main__":
    sys.exit(main())
