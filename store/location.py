"""Where a store lives: a local path or an fsspec URL, and the Zarr store object that reaches it.

A location is a local path (``demo/features.zarr``: the default, handled exactly as a path always was), a
``file://`` URL (the same local folder), or the URL of any fsspec filesystem (``memory://``, ``s3://``,
``gs://``, ``az://``, chained URLs such as ``simplecache::s3://...``)::

    from store.location import Location

    loc = Location.parse("s3://bucket/features.zarr", {"anon": True})
    root = zarr.open_group(loc.zarr_store(read_only=True), mode="r")

Remote protocols need their fsspec backend package (``s3fs``, ``gcsfs``, ``adlfs``, ...); a missing one raises
:class:`MissingBackendError` naming the package. ``storage_options`` go to the filesystem (credentials,
endpoints); fsspec also reads them from ``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables and its config
files (``fsspec.config``), which is how the command line takes them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fsspec
import fsspec.implementations.local
from fsspec.registry import known_implementations
from zarr.abc.store import Store

from .errors import InvalidInputError, RfcxError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
LOCAL_PROTOCOLS = ("file", "local")
# pip packages of the fsspec backends whose module name is not the package name
_PACKAGES = {
    "http": "aiohttp",
    "https": "aiohttp",
    "sftp": "paramiko",
    "ssh": "paramiko",
    "hdfs": "pyarrow",
    "arrow_hdfs": "pyarrow",
    "hf": "huggingface_hub",
    "dropbox": "dropboxdrivefs",
}


class MissingBackendError(RfcxError, ValueError):
    """A URL whose protocol needs an fsspec backend package that is not installed."""


def is_url(location: str | os.PathLike) -> bool:
    """``True`` for ``proto://...`` and chained ``a::b://...`` URLs, ``False`` for a local path."""
    text = os.fspath(location)
    return isinstance(text, str) and (bool(_SCHEME.match(text)) or "::" in text)


def protocols(url: str) -> list[str]:
    """The protocols of a (possibly chained) URL, outermost first: ``simplecache::s3://b/k`` -> simplecache, s3."""
    out = []
    for part in url.split("::"):
        m = _SCHEME.match(part)
        out.append(m.group(1).lower() if m else part.lower())
    return out


def backend_package(protocol: str) -> str:
    """The pip package providing ``protocol``'s fsspec filesystem (``s3`` -> ``s3fs``, ``gs`` -> ``gcsfs``)."""
    if protocol in _PACKAGES:
        return _PACKAGES[protocol]
    spec = known_implementations.get(protocol, {})
    return spec.get("class", protocol).split(".")[0]


def check_backend(url: str) -> None:
    """Raise :class:`MissingBackendError` (naming the pip package) or ``ValueError`` (unknown protocol) unless
    every protocol of ``url`` has a usable fsspec filesystem."""
    for protocol in protocols(url):
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError:
            pkg = backend_package(protocol)
            raise MissingBackendError(
                f"{protocol}:// needs the {pkg} package: pip install {pkg} (to use {url})"
            ) from None
        except ValueError:
            known = ", ".join(sorted(p for p in fsspec.available_protocols() if len(p) < 12)[:30])
            raise InvalidInputError(f"{url}: unknown URL protocol {protocol!r} (fsspec knows: {known})") from None


@dataclass(frozen=True)
class Location:
    """A parsed store location. ``protocol`` is ``None`` for a plain local path."""

    text: str
    protocol: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, location: "str | os.PathLike | Location", storage_options: Mapping[str, Any] | None = None
    ) -> "Location":
        """A location from a path or URL; URLs have their backend checked here (clear error when missing)."""
        if isinstance(location, Location):
            if storage_options:
                return cls(location.text, location.protocol, {**location.storage_options, **storage_options})
            return location
        text = os.fspath(location)
        if not is_url(text):
            return cls(text, None, dict(storage_options or {}))
        check_backend(text)
        return cls(text, protocols(text)[0], dict(storage_options or {}))

    def __str__(self) -> str:
        return self.text

    @property
    def is_local(self) -> bool:
        """A local folder: a plain path or a ``file://`` URL."""
        return self.protocol is None or (self.protocol in LOCAL_PROTOCOLS and "::" not in self.text)

    @property
    def local_path(self) -> Path:
        """The folder of a local location (``ValueError`` for a remote one)."""
        if self.protocol is None:
            return Path(self.text)
        if not self.is_local:
            raise InvalidInputError(f"{self.text}: not a local path")
        return Path(fsspec.implementations.local.LocalFileSystem._strip_protocol(self.text))

    @property
    def display(self) -> str:
        """For messages and fingerprints: the absolute path of a local location, the URL otherwise."""
        return os.path.abspath(self.local_path) if self.is_local else self.text

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The fsspec filesystem and the path inside it (local locations get the local filesystem)."""
        if self.protocol is None:
            return fsspec.filesystem("file"), os.path.abspath(self.text)
        fs, path = fsspec.core.url_to_fs(self.text, **dict(self.storage_options))
        return fs, path

    def zarr_store(self, read_only: bool = False) -> str | Store:
        """What ``zarr.open_group`` takes: the path string of a local location (Zarr's ``LocalStore``), an
        ``FsspecStore`` of a remote one (sync filesystems such as ``memory://`` are wrapped by Zarr)."""
        if self.is_local:
            return str(self.local_path)
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.text, storage_options=dict(self.storage_options) or None, read_only=read_only)

    def exists(self) -> bool:
        if self.is_local:
            return self.local_path.exists()
        fs, path = self.filesystem()
        return bool(fs.exists(path))

    def has_content(self) -> bool:
        """Something is there: a non-empty folder, a file, or (remote) any key under the prefix."""
        if self.is_local:
            p = self.local_path
            return p.is_file() or (p.is_dir() and any(p.iterdir()))
        fs, path = self.filesystem()
        try:
            return bool(fs.exists(path) and (fs.isfile(path) or fs.ls(path, detail=False)))
        except FileNotFoundError:
            return False


def open_group(
    location: "str | os.PathLike | Location",
    mode: Literal["r", "r+", "a", "w", "w-"] = "r",
    storage_options: Mapping[str, Any] | None = None,
):  # -> zarr.Group
    """``zarr.open_group`` on a path or URL (``mode`` as Zarr's: r, r+, a, w, w-)."""
    import zarr

    loc = Location.parse(location, storage_options)
    return zarr.open_group(loc.zarr_store(read_only=mode == "r"), mode=mode)


__all__ = ["Location", "MissingBackendError", "backend_package", "check_backend", "is_url", "open_group", "protocols"]
