"""The project's error root (:class:`RfcxError`), and the store's errors under theirs (:class:`StoreError`): bad
input (it names the file, row and reason) and a damaged store (it names the split, clip and chunk). The writer
lock's :class:`store.lock.LockedError` is one too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rejection:
    """A piece of input that was not stored, and why."""

    file: str
    reason: str
    row: int | None = None  # 1-based line number in a CSV file (the header is line 1)
    split: str | None = None
    cause: str | None = None  # a cause many rows share, reported grouped (store.rejections); None: a defect

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row is not None else self.file
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict:
        return {"file": self.file, "reason": self.reason, "row": self.row, "split": self.split, "cause": self.cause}

    @classmethod
    def from_dict(cls, d: dict) -> "Rejection":
        return cls(file=d["file"], reason=d["reason"], row=d.get("row"), split=d.get("split"), cause=d.get("cause"))


class RfcxError(Exception):
    """The root of every user-facing error of the project (store, engine, rfcx): its message says what is wrong
    and what to do. The command line turns one into ``error: <message>`` on stderr and exits with
    :attr:`exit_code`; any other exception is a bug and keeps its traceback.

    Every subclass stays constructible from one message string: exceptions are pickled across processes and
    rebuilt (torch's DataLoader re-raises a worker's error as ``type(exc)(message)``)."""

    exit_code = 1


class InvalidInputError(RfcxError, ValueError):
    """A value, an option, or a file's content that cannot be used (the message names it and says why)."""


class NotFoundError(RfcxError, FileNotFoundError):
    """A file, folder, store, run or round that is not where it was asked for."""


class MissingKeyError(RfcxError, KeyError):
    """Something looked up by name that is not there (a table, a column, a split); a KeyError whose message reads
    as a sentence (``str`` of a plain KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoppedAtBadInput(InvalidInputError):
    """``--strict``: the first input that cannot be used ended the job (exit code 2; what was done before stays)."""

    exit_code = 2


class StoreError(RfcxError):
    """The root of the errors the store raises about its input and its own files."""


class BadInputError(StoreError, ValueError):
    """Raised for input that cannot be used; carries the :class:`Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection

    @classmethod
    def of(cls, file: str | Path, reason: str, row: int | None = None, split: str | None = None) -> "BadInputError":
        return cls(Rejection(str(file), reason, row, split))


class DamagedStoreError(StoreError, ValueError):
    """A stored clip cannot be read back as written: a chunk whose checksum does not match, that does not
    decompress, or that is missing. ``damage`` (a :class:`store.integrity.Damage`) names the split, clip and
    chunk; the message says how to repair it."""

    def __init__(self, message: str, damage: object = None) -> None:
        super().__init__(message)
        self.damage = damage
