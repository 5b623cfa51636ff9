"""A review page in a real browser (headless Chromium, where installed): a screenshot, and a check that every
picture decodes and every audio snippet loads, with the console's messages.

Both load a copy of ``index.html`` beside it (so that its relative links resolve the same), removed afterwards:
the screenshot's copy hides the sections not asked for; the check's copy adds a script that, once the page has
loaded, records each ``<img>`` (decoded: a natural width) and each ``<audio>`` (its metadata loads, or it fails)
into the document, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from store.errors import RfcxError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--disable-gpu",
    "--no-sandbox",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=15000",
)
CONSOLE = re.compile(r":CONSOLE[:(]")  # Chromium's log lines of the page's console messages

CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const out = {images: [], audio: []};
  for (const im of document.images) out.images.push([im.getAttribute("src"), im.complete && im.naturalWidth > 0]);
  const players = Array.from(document.querySelectorAll("audio"));
  let left = players.length;
  const done = () => {
    const pre = document.createElement("pre");
    pre.id = "review-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  };
  if (!left) done();
  players.forEach((a, i) => {
    const finish = (ok) => { out.audio[i] = [a.getAttribute("src"), ok]; if (--left === 0) done(); };
    a.addEventListener("loadedmetadata", () => finish(true), {once: true});
    a.addEventListener("error", () => finish(false), {once: true});
    a.preload = "metadata";
    a.load();
  });
});
</script>"""


@dataclass(frozen=True)
class PageCheck:
    """What the browser found: ``(src, loaded)`` of every image and audio element, and the console's lines."""

    images: list[tuple[str, bool]]
    audio: list[tuple[str, bool]]
    console: list[str]
    version: str

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.images) and all(ok for _, ok in self.audio) and not self.console


class BrowserError(RfcxError, RuntimeError):
    """Chromium did not do what was asked: it did not finish, or wrote no result."""


class NoBrowserError(BrowserError, FileNotFoundError):
    """No Chromium on the PATH."""


def find_browser() -> str | None:
    """The first headless-capable Chromium on the PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_version(browser: str) -> str:
    try:
        return subprocess.run([browser, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _copy_with(index: Path, name: str, extra_head: str = "", extra_body: str = "") -> Path:
    html = index.read_text(encoding="utf-8")
    if extra_head:
        html = html.replace("</head>", f"{extra_head}</head>", 1)
    if extra_body:
        html = html.replace("</body>", f"{extra_body}</body>", 1)
    copy = index.with_name(name)
    copy.write_text(html, encoding="utf-8")
    return copy


def _run(browser: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([browser, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BrowserError(f"{browser}: did not finish in {timeout:g} s") from None
    except OSError as exc:  # it did not start
        raise BrowserError(f"{browser}: could not be run ({exc})") from exc


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def check_page(index: str | Path, browser: str | None = None, timeout: float = 180) -> PageCheck:
    """Load the page in headless Chromium: :class:`PageCheck` of its images, audio and console."""
    index = Path(index).resolve()
    browser = browser or find_browser()
    if browser is None:
        raise NoBrowserError(f"no Chromium on the PATH (looked for {', '.join(BROWSERS)})")
    copy = _copy_with(index, ".check.html", extra_body=CHECK_SCRIPT)
    try:
        done = _run(browser, ["--dump-dom", copy.as_uri()], timeout)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r'<pre id="review-check">(.*?)</pre>', done.stdout, re.S)
    if found is None:
        raise BrowserError(
            f"{browser}: the page's check did not finish (exit {done.returncode}); stderr ends: {done.stderr[-2000:]}"
        )
    result = json.loads(
        found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    return PageCheck(
        [tuple(x) for x in result["images"]],
        [tuple(x) for x in result["audio"]],
        _console(done.stderr),
        browser_version(browser),
    )


def screenshot(
    index: str | Path,
    png: str | Path,
    sections: Sequence[str] | None = None,
    width: int = 1280,
    height: int = 2000,
    browser: str | None = None,
    colours: int = 256,
    timeout: float = 180,
) -> Path:
    """A screenshot (``width`` x ``height`` from the top) of the page, showing only the ``sections`` (ids: ``rounds``,
    ``round-1``, ``species-8``, ...) where given, as a palette PNG of ``colours``."""
    from PIL import Image

    index, png = Path(index).resolve(), Path(png).resolve()
    browser = browser or find_browser()
    if browser is None:
        raise NoBrowserError(f"no Chromium on the PATH (looked for {', '.join(BROWSERS)})")
    hide = ""
    if sections:
        shown = ", ".join(f"#{s}" for s in sections)
        hide = f"<style>main > section {{ display: none; }} {shown} {{ display: block; }}</style>"
    copy = _copy_with(index, ".screenshot.html", extra_head=hide)
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = _run(browser, [f"--screenshot={png}", f"--window-size={width},{height}", copy.as_uri()], timeout)
    finally:
        copy.unlink(missing_ok=True)
    if not png.is_file():
        raise BrowserError(
            f"{browser}: no screenshot written (exit {done.returncode}); stderr ends: {done.stderr[-2000:]}"
        )
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)
    return png
