"""The ``rfcx`` application: the typer app every command registers on, the one place that turns an error into a
message and an exit code, and the torchrun guard."""

from __future__ import annotations

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
        try:
            return super().invoke(ctx)
        except RfcxError as exc:
            _close_progress_bars()
            typer.secho(f"error: {error_message(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_code) from exc


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
