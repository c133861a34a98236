"""Headless Chromium for the report: a screenshot for the README, and a check that the page loads.

`check_page` opens a copy of the page with a small probe script: it records any error event from
the moment the page starts (a script error, an image that fails to decode) and, on load, writes each
image's naturalWidth into the DOM, which `--dump-dom` hands back. No extra dependency: the browser
is Debian's `chromium` package (scripts/install_chromium.sh).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from marsedge.errors import MarsedgeError
from marsedge.io import atomic_write

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage")

PROBE_HEAD = """<script>window.__marsedgeErrors = [];
window.addEventListener('error', function (e) {
  var what = e.message || (e.target && (e.target.alt || e.target.tagName));
  window.__marsedgeErrors.push(String(what));
}, true);</script>"""
PROBE_BODY = """<script>window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (im) {
    return {alt: im.alt, complete: im.complete, naturalWidth: im.naturalWidth};
  });
  var pre = document.createElement('pre');
  pre.id = 'marsedge-check';
  pre.textContent = JSON.stringify({title: document.title, errors: window.__marsedgeErrors, images: images});
  document.body.appendChild(pre);
});</script>"""


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise MarsedgeError("chromium not found (apt-get install chromium, or scripts/install_chromium.sh)")
    with tempfile.TemporaryDirectory(prefix="marsedge-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: str | Path, png: str | Path, width: int = 1280, height: int = 2400,
               timeout: float = 120) -> Path:
    """A PNG of the page's top `height` pixels at `width` wide."""
    def shoot(tmp: Path) -> None:  # into an empty temp file: an older PNG never passes for this page's
        done = _chromium([f"--screenshot={tmp}", f"--window-size={width},{height}",
                          "--virtual-time-budget=5000", Path(page).resolve().as_uri()], timeout)
        if not tmp.is_file() or not tmp.stat().st_size:
            raise MarsedgeError(f"chromium wrote no screenshot of {page}: {done.stderr.strip()[-300:]}")

    return atomic_write(Path(png).resolve(), shoot)


def check_page(page: str | Path, timeout: float = 120) -> dict:
    """Load the page in headless Chromium; return {title, errors, images: [{alt, complete, naturalWidth}]}."""
    text = Path(page).read_text()
    probed = text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1)
    with tempfile.TemporaryDirectory(prefix="marsedge-page-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probed)
        done = _chromium(["--dump-dom", "--virtual-time-budget=10000", copy.as_uri()], timeout)
    found = re.search(r'<pre id="marsedge-check">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise MarsedgeError(f"{page} did not finish loading in chromium: {done.stderr.strip()[-300:]}")
    return json.loads(html.unescape(found.group(1)))
