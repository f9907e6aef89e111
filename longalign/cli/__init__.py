"""The ``longalign`` command line: one subcommand per stage, plus the whole DAG.

Every stage subcommand runs the same library function the KFP component calls, on local paths.
Configuration comes from one loader (``longalign.config.load_run_config``): a preset, an optional
config file (YAML/JSON, sections named after the stages), ``--set section.key=value`` overrides and
the command's flags, in that order. Each flag is a config key (``FLAG_KEYS``) and its help text is
that key's description.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Optional

from longalign.cli import stages  # registers the stage commands first (the order of --help)
from longalign.cli import cluster  # then the cluster commands
from longalign.cli.app import FLAG_KEYS, _config, app
from longalign.errors import UserError

__all__ = ["FLAG_KEYS", "app", "cluster", "error_line", "main", "stages", "_config"]

log = logging.getLogger("longalign")


def _setup_logging() -> None:
    from rich.logging import RichHandler

    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(show_path=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


INTERRUPTED = "interrupted: nothing was written (unfinished outputs are removed)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def error_line(message: object) -> str:
    """One ``error:`` line: the first line of ``message`` without terminal colour codes."""
    text = ANSI.sub("", str(message)).strip()
    first = text.splitlines()[0] if text else "failed"
    return f"error: {first}"


def _os_error(exc: OSError) -> str:
    """``PATH: reason`` for an OSError (``A -> B: reason`` for a rename)."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = (exc.strerror or type(exc).__name__).lower()
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason += " (a file is where a folder is needed)"
    return f"{where}: {reason}" if where else f"{reason}: {exc}"


def _interrupted() -> None:
    from longalign.io import remove_unfinished

    remove_unfinished()
    print(INTERRUPTED, file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: user mistakes become one line on stderr and exit code 2 (usage errors: click's).

    An OSError that reaches here is a location the user named (an output under a file, a folder
    without write permission, a missing input): one line naming the path, exit 2. Ctrl-C exits 130
    with one line; stage outputs are written through a temporary folder, so nothing is left half
    written.
    """
    _setup_logging()
    try:
        app(args=argv)
    except UserError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(error_line(_os_error(exc)), file=sys.stderr)
        return 2
    except MemoryError:
        print(error_line("out of memory (lower the sizes in the config, e.g. packing.max_len)"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _interrupted()
        return 130
    except SystemExit as exc:  # typer turns Ctrl-C into exit code 130 without a word
        if exc.code == 130:
            _interrupted()
        raise
    return 0
