"""The ``rfcx`` command line: one command module per side of the system, registered on one typer app.

``core`` holds the app and the error handling, ``options`` the options several commands share; ``data`` (synth,
build-store, info), ``training`` (train, report), ``inference`` (export, infer, evaluate) and ``review`` hold the
commands, each a parse -> library call -> print. Other packages add commands through the ``rfcx.commands`` entry
point (``benchmarks`` adds ``bench``)."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from rfcx.cli.core import app

__all__ = ["app", "main"]

COMMAND_MODULES = ("data", "training", "inference", "review")  # in the order `rfcx --help` lists their commands


def _register() -> None:
    for name in COMMAND_MODULES:  # each registers its commands on app as it is imported
        import_module(f"rfcx.cli.{name}")
    for point in entry_points(group="rfcx.commands"):  # commands of other packages (benchmarks: bench)
        point.load()(app)


_register()


def main() -> None:
    app()
