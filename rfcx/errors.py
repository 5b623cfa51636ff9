"""The errors rfcx raises for its users. Every one derives from the project's one root,
:class:`store.errors.RfcxError` (defined in the bottom layer so that ``store`` and ``engine`` raise them too): the
command line prints ``error: <message>`` and exits with the error's ``exit_code``; any other exception is a bug and
keeps its traceback.

Each derives from the built-in it replaces as well (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so
``except ValueError`` in a caller's code keeps working."""

from __future__ import annotations

from store.errors import InvalidInputError, MissingKeyError, NotFoundError, RfcxError, StoppedAtBadInput

__all__ = [
    "ConfigError",
    "InvalidInputError",
    "MissingKeyError",
    "NotFoundError",
    "RfcxError",
    "RunError",
    "StoppedAtBadInput",
    "UsageError",
]


class UsageError(InvalidInputError):
    """An option value, or a combination of options, that a command cannot use."""


class ConfigError(InvalidInputError):
    """A training config (a named one, a TOML/YAML file, or ``--set key=value``) that is not valid."""


class RunError(InvalidInputError):
    """A run directory that lacks what was asked of it (no complete round, no exported models, another config)."""
