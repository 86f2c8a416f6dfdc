"""Command line: ``python -m harness <command>`` (or the ``harness`` console script).

Expected mistakes (unknown names, bad task files, missing data) print one clear
line and exit 2; only bugs show a traceback.

============  ===============================================================
``parser``    ``build_parser``: the subcommands, their options and examples
``commands``  one handler per subcommand (``HANDLERS``)
============  ===============================================================

``main`` (here) parses, sets up logging, runs the command's handler and turns an expected
mistake into its one line. It also remembers the command line (``python -m harness ...``) while
the handler runs: every run it asks for records it as ``argv`` (``harness.dispatch.runner.invocation``).
"""

from __future__ import annotations

import logging
import sys

from harness.cli.commands import HANDLERS
from harness.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one ``harness`` command.

    Args:
        argv: the arguments after ``harness`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: the handler's (0 done, 1 a run failed or a check found problems), 2 for an
        expected mistake (one ``harness: error: ...`` line on stderr), 130 when interrupted.
    """
    from harness.dispatch.runner import set_invocation

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    set_invocation(["python", "-m", "harness", *(sys.argv[1:] if argv is None else argv)])
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from harness.dispatch.failures import expected_types  # imported only when something went wrong

        if isinstance(exc, expected_types()):  # an expected mistake: one line, exit 2; a bug keeps its traceback
            print(f"harness: error: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        set_invocation(None)  # a later Python-API run in this process was not asked for by this command
