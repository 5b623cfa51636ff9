"""A run directory at an fsspec URL (``s3://bucket/runs``, ``gs://...``, ``memory://...``), mirrored in a local
cache folder.

Training, export and inference keep their file IO local (``torch.save``, ``np.savez``, matplotlib, Zarr, the
TorchScript / ``torch.export`` writers all work on the cache folder); the mirror moves files between the cache
and the URL:

- :meth:`RunMirror.pull` at the start copies the remote files a command needs (all, or a selection) into the
  cache, skipping those it already holds unchanged;
- :meth:`RunMirror.push` after every checkpoint, member and round uploads the files that changed since they were
  last transferred, the round's ``complete.json`` marker last (then the run's ``best_round.json``, which names a
  complete round), so a job killed at any point resumes (here or on
  another machine) from what reached the URL.

What was transferred is recorded in ``CACHE/.rfcx-mirror.json``: per file, the remote version (size and
ETag/mtime as the filesystem reports it) and the local one (size, mtime). A pull downloads a file when the
remote version differs from the recorded one (or the cache lacks it), keeps a local file that changed after
its last transfer while the remote did not (work not pushed yet), and removes local files that were transferred
before but are gone from the URL. A push never deletes remote files.

The cache folder is ``$RFCX_CACHE_DIR/runs/<host>/<path>-<hash>`` (default ``~/.cache/rfcx``): one folder per
URL, reused by later commands so that unchanged files are not downloaded twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from store.atomic import atomic_path, write_text_atomic
from store.errors import RfcxError
from store.location import Location

log = logging.getLogger(__name__)

MANIFEST = ".rfcx-mirror.json"
MARKERS = ("complete.json", "best_round.json")  # pushed after everything else, in this order
CACHE_ENV = "RFCX_CACHE_DIR"
_VERSION_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "generation",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "created",
)


class UploadError(RfcxError, OSError):
    """A run's files could not reach its URL (the run itself is complete in the local cache)."""


def cache_root() -> Path:
    """``$RFCX_CACHE_DIR`` or ``~/.cache/rfcx``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rfcx"


def cache_folder(url: str) -> Path:
    """The cache folder of a run URL: readable (protocol, host, last path parts) and unique (a hash of the URL)."""
    digest = hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").split("://", 1)[-1])[-60:].strip("_") or "run"
    return cache_root() / "runs" / f"{readable}-{digest}"


def _version(info: dict[str, Any]) -> str:
    """What identifies one version of a remote file: its size and the first version-like field there is."""
    for key in _VERSION_KEYS:
        if info.get(key) is not None:
            return f"{info.get('size')}:{key}={info[key]}"
    return f"{info.get('size')}"


def _local_version(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class RunMirror:
    """Moves the files of one run directory between ``url`` and the local ``cache`` folder (see the module)."""

    def __init__(self, url: str | Location, cache: Path | None = None) -> None:
        self.location = Location.parse(url)
        self.url = self.location.text.rstrip("/")
        self.cache = Path(cache) if cache is not None else cache_folder(self.url)
        self.fs, root = self.location.filesystem()
        self.root = root.rstrip("/")
        self._atomic_rename = "file" in _protocols(self.fs)

    def __repr__(self) -> str:
        return f"RunMirror({self.url} <-> {self.cache})"

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        path = self.cache / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data.get("files", {}) if data.get("url") == self.url else {}

    def _save(self, files: dict[str, dict[str, Any]]) -> None:
        write_text_atomic(
            self.cache / MANIFEST, json.dumps({"url": self.url, "files": files}, indent=0, sort_keys=True)
        )

    def remote_path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def url_of(self, local: Path) -> str:
        """The URL of a file of the cache folder (for messages)."""
        try:
            return f"{self.url}/{Path(local).relative_to(self.cache).as_posix()}"
        except ValueError:
            return str(local)

    def listing(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """The remote files under ``prefix`` (relative to the run): {relative path: info}."""
        base = self.remote_path(prefix.strip("/")) if prefix.strip("/") else self.root
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            if info.get("type", "file") != "file":
                continue
            rel = _relative(path, self.root)
            if rel is None or _hidden(rel):
                continue
            out[rel] = info
        return out

    # -- pull -------------------------------------------------------------------------------------------------
    def pull(self, select: Callable[[str, set[str]], bool] | None = None, prefix: str = "") -> list[str]:
        """Bring the cache up to date with the remote files under ``prefix`` that ``select(rel, all_rels)``
        keeps (default: all); returns the relative paths downloaded."""
        remote = self.listing(prefix)
        names = set(remote)
        files = self._load()
        fetched = []
        for rel in sorted(remote):
            if select is not None and not select(rel, names):
                continue
            local = self.cache / rel
            entry = files.get(rel)
            version = _version(remote[rel])
            if entry is not None and local.is_file() and entry.get("remote") == version:
                continue  # the cache holds this version (or a newer local one not pushed yet)
            self._download(rel, local)
            files[rel] = {"remote": version, "local": _local_version(local)}
            fetched.append(rel)
        scope = prefix.strip("/")
        for rel in [r for r in files if r not in remote and (not scope or r == scope or r.startswith(scope + "/"))]:
            if select is not None and not select(rel, names):
                continue
            (self.cache / rel).unlink(missing_ok=True)  # transferred before, deleted at the URL since
            del files[rel]
        if fetched or files != self._load():
            self._save(files)
        if fetched:
            log.info("pulled %d file(s) of %s into %s", len(fetched), self.url, self.cache)
        return fetched

    def _download(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(local) as tmp:
            self.fs.get_file(self.remote_path(rel), str(tmp))

    # -- push -------------------------------------------------------------------------------------------------
    def push(self, strict: bool = True) -> list[str]:
        """Upload the cache's files that changed since their last transfer (markers last); returns them.

        With ``strict=False`` a failed upload is logged and left for the next push instead of raised."""
        if not self.cache.is_dir():
            return []
        files = self._load()
        changed = [
            rel
            for rel in _local_files(self.cache)
            if files.get(rel, {}).get("local") != _local_version(self.cache / rel)
        ]
        changed.sort(key=lambda rel: (MARKERS.index(Path(rel).name) + 1 if Path(rel).name in MARKERS else 0, rel))
        pushed = []
        try:
            for rel in changed:
                local = self.cache / rel
                version = _local_version(local)
                self._upload(local, rel)
                files[rel] = {"remote": _version(self.fs.info(self.remote_path(rel))), "local": version}
                pushed.append(rel)
        except Exception as exc:
            if strict:
                raise UploadError(
                    f"{self.url}: could not upload {rel} ({type(exc).__name__}: {exc}); "
                    f"the run is complete in {self.cache} and the next run pushes it"
                ) from exc
            log.warning(
                "%s: could not upload %s (%s: %s); retrying at the next checkpoint",
                self.url,
                rel,
                type(exc).__name__,
                exc,
            )
        finally:
            if pushed:
                self._save(files)
        return pushed

    def _upload(self, local: Path, rel: str) -> None:
        target = self.remote_path(rel)
        parent = target.rsplit("/", 1)[0]
        if self._atomic_rename:  # a local or mounted folder: write beside and rename, a reader never sees half
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.{local.name}.push{os.getpid()}"
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, target)
        else:  # object stores make an object visible only once it is whole
            self.fs.put_file(str(local), target)


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _relative(path: str, root: str) -> str | None:
    path = path.rstrip("/")
    root_stripped = root.lstrip("/")
    for r in (root, root_stripped):
        if path.startswith(r + "/"):
            return path[len(r) + 1 :]
    return None


def _hidden(rel: str) -> bool:
    """Temp files (``.name.tmp123``, ``.name.push123``) and the manifest are not part of a run."""
    return any(part.startswith(".") for part in rel.split("/"))


def _local_files(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield (Path(dirpath) / name).relative_to(root).as_posix()
