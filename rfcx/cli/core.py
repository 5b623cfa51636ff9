"""The ``rfcx`` application: the typer app every command registers on, the one place that turns an error into a
message and an exit code, and the torchrun guard."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from rfcx.errors import RfcxError

if TYPE_CHECKING:
    from typer._click.core import Context  # typer vendors click: its groups are given this Context

DISTRIBUTED_COMMANDS = ("build-store", "train", "infer")  # what runs under torchrun (infer: with --batch)


def error_message(exc: BaseException) -> str:
    """The error's own line. Where a worker process passed it on wrapped in its traceback (torch's DataLoader:
    ``Caught DamagedStoreError in DataLoader worker process 0. Original Traceback ...``): the last line, without
    the exception's class name."""
    message = str(exc)
    if "Original Traceback" not in message:
        return message
    last = next((ln for ln in reversed(message.strip().splitlines()) if ln.strip()), message)
    name, sep, rest = last.partition(": ")
    return rest if sep and " " not in name else last


class RfcxGroup(TyperGroup):
    """The command group: an :class:`RfcxError` from any command (or the library it calls) becomes
    ``error: <message>`` on stderr and its ``exit_code``; any other exception keeps its traceback."""

    def invoke(self, ctx: Context) -> Any:
        argv = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]  # the command and its arguments
        for value in dict.fromkeys(a.split("=", 1)[-1] for a in argv if "memory://" in a):
            typer.secho(
                f"note: {value} lives in this process's memory only: what the command writes there is gone when it "
                "ends (give a folder, or a file system URL such as s3://, to keep it)",
                fg=typer.colors.YELLOW,
                err=True,
            )
        try:
            return super().invoke(ctx)
        except RfcxError as exc:
            _close_progress_bars()
            typer.secho(f"error: {error_message(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_code) from exc
        except OSError as exc:
            message = storage_message(exc, _output_of(argv))
            if message is None:
                raise
            _close_progress_bars()
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc


# What the file system refused, and what the user can do about it (a re-run resumes where the command stopped)
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_message(exc: OSError, output: str | None = None) -> str | None:
    """One line for an OSError of the storage (a full disk, a read-only file system, no permission), naming the
    path (the exception's, else ``output``: the command's own) and what to do; None for any other OSError."""
    reason = STORAGE_ERRORS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    where = exc.filename or output or "the output"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = "free some space (or write to another disk) and run the same command again"
    else:
        todo = "give a folder this user can write to, or make this one writable, and run the command again"
    return (
        f"{where}: {reason} (errno {exc.errno}); {todo}: it goes on where it stopped (what was written whole is "
        f"kept, nothing half-written is taken for whole)"
    )


OUTPUTS = {"build-store": "--store", "train": "--runs", "infer": "--out", "review": "--out", "synth": None}


def _output_of(args: list[str]) -> str | None:
    """The command's own output (build-store's --store, train's --runs, infer's and review's --out, synth's folder)
    in its arguments: where a write failed that named no file."""
    if not args:
        return None
    if args[0] == "synth":
        return next((a for a in args[1:] if not a.startswith("-")), None)
    flag = OUTPUTS.get(args[0])
    if flag is None:
        return None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
    if args[0] == "synth":
        return next((a for a in args[1:] if not a.startswith("-")), None)
    flag = OUTPUTS.get(args[0])
    for i, arg in enumerate(args[:-1]):
        if flag is not None and arg == flag:
            return args[i + 1]
        if flag is not None and arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _close_progress_bars() -> None:
    """Close the progress bars still open (an error raised inside one's loop): each ends its line (or clears it),
    so that the error is printed on a line of its own, not at the end of a bar's."""
    import sys

    tqdm = sys.modules.get("tqdm.std")  # only where a bar was made: the command line does not import tqdm itself
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 (a bar whose stream is gone: nothing to end)
            pass


app = typer.Typer(
    cls=RfcxGroup,
    add_completion=False,
    no_args_is_help=True,
    help="rfcx: bioacoustic species detection at scale (feature store, training recipe, batch inference).",
)


@app.callback()
def _main(
    ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from rfcx.errors import UsageError
    from rfcx.process_group import torchrun_launch

    launch = torchrun_launch()
    if launch is not None and launch.world > 1 and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise UsageError(
            f"`rfcx {ctx.invoked_subcommand}` runs as one process; start it without torchrun (torchrun "
            f"runs {', '.join(DISTRIBUTED_COMMANDS[:-1])} and infer --batch)"
        )
