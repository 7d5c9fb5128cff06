"""Errors a user can act on, the exit codes, and the click group that turns any error into one line.

Stage functions raise `DataError` (a bad input file: it names the file and, where there is one, the
line), `UsageError` (a wrong flag, folder or order of commands) or `MissingInputError`; they subclass
ValueError / FileNotFoundError so callers that catch those keep working. `Commands` ends every command
with one `error: ...` line on stderr and the exit code below, never a traceback; `--debug` or
SIXRAY_DEBUG=1 shows the traceback (for us, and for bug reports).
"""

import errno
import os
import sys
from concurrent.futures.process import BrokenProcessPool

import click

EXIT_DATA = 1
"""A data problem: bad input files or rows (reported, the rest of the work done), a full disk."""
EXIT_USAGE = 2
"""A usage error: a wrong flag or path, or commands run out of order (click uses 2 for its own)."""
EXIT_BUG = 3
"""An internal error: a bug; rerun with --debug and report the traceback."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as shells report it); finished work is kept and a rerun resumes."""

DEBUG_ENV = "SIXRAY_DEBUG"


class SixrayError(Exception):
    """An error the user can act on: printed as its message alone, exit code `exit_code`."""

    exit_code = EXIT_DATA


class DataError(SixrayError, ValueError):
    """Input data that cannot be used: an unreadable label file, checkpoint or shard."""


class UsageError(SixrayError, ValueError):
    """A wrong flag or value, a folder that is not what the command needs, commands out of order."""

    exit_code = EXIT_USAGE


class MissingInputError(UsageError, FileNotFoundError):
    """A file or folder the command needs does not exist (yet): the message says which command makes it."""


def message_of(exc: BaseException) -> str:
    """The exception's own message, also when a DataLoader worker re-raised it: torch then prepends
    'Caught X in DataLoader worker process N' and the worker's traceback, and the message is the last
    line, after the exception's qualified name."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and " " not in name else last


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ends a command."""
    if isinstance(exc, SixrayError):
        return exc.exit_code, message_of(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, ("interrupted; finished work is kept: rerun the same command to resume "
                                  "(`model train` with --resume added)")
    if isinstance(exc, OSError) and isinstance(exc.filename, bytes):  # a path as text, never b'...'
        exc.filename = os.fsdecode(exc.filename)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return EXIT_DATA, f"disk full{where}; nothing finished was lost: free space and rerun to resume"
    if isinstance(exc, PermissionError):
        return EXIT_USAGE, f"permission denied: {exc.filename or exc}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_USAGE, f"{exc.filename}: missing (no such file or folder)" if exc.filename else str(exc)
    if isinstance(exc, MemoryError):
        return EXIT_DATA, "out of memory; use fewer --workers or a smaller --batch-size"
    if isinstance(exc, BrokenProcessPool):
        return EXIT_DATA, "a worker process died (killed, or out of memory?); rerun to resume"
    if isinstance(exc, OSError):
        return EXIT_DATA, str(exc)
    foreign = _foreign_library_error(exc)
    if foreign:
        return foreign
    return EXIT_BUG, (f"internal error ({type(exc).__name__}: {exc}); this is a bug: rerun with --debug "
                      "and report the traceback")


def _foreign_library_error(exc: BaseException) -> tuple[int, str] | None:
    """duckdb's and Arrow's read errors, and text that does not decode, as our kinds: a read-only or
    unwritable folder is a usage error (2), a file that is not what it should be a data error (1). Their
    messages run over several lines; the first says what happened."""
    kind = f"{type(exc).__module__}.{type(exc).__name__}"
    first = (str(exc).strip().splitlines() or [""])[0]
    if kind.startswith("_duckdb.") or kind.startswith("duckdb."):
        if "Permission denied" in str(exc) or "Read-only file system" in str(exc):
            return EXIT_USAGE, f"permission denied ({first})"
        if kind.endswith(("IOException", "InvalidInputException", "ConversionException", "BinderException")):
            return EXIT_DATA, f"a file is not what it should be ({first})"
    if kind.startswith("pyarrow.") and isinstance(exc, (ValueError, OSError)):
        return EXIT_DATA, f"not a readable Parquet file ({first})"
    if isinstance(exc, UnicodeError):
        return EXIT_DATA, f"text that is not valid UTF-8 ({first})"
    return None


def debug_requested(ctx: click.Context) -> bool:
    return bool(ctx.meta.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _remember_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:  # the subcommand's own --debug (default off) must not switch off the group's
        ctx.meta["debug"] = True


def _debug_option() -> click.Option:
    return click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                        callback=_remember_debug,
                        help=f"Show the traceback of an error (or set {DEBUG_ENV}=1).")


class Commands(click.Group):
    """A click group whose commands end any error, click's own usage errors included, with one line on
    stderr and a documented exit code; --debug goes before or after the subcommand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(_debug_option())
        super().add_command(cmd, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as exc:  # a bad flag, an unknown command: no usage block
            click.echo(f"error: {exc.format_message()} (see --help)", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo(f"error: {describe(KeyboardInterrupt())[1]}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BaseException as exc:
            if debug_requested(ctx):
                raise
            code, message = describe(exc)
            sys.stdout.flush()
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)
