"""Open a page in headless Chromium (Debian's chromium, installed by scripts/setup.sh): the DOM after
its scripts ran, the console messages it logged, and a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--enable-logging=stderr",
          "--v=0"]
_CONSOLE = re.compile(r":CONSOLE:\d+\] (.*)")


def open_page(path: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console messages)."""
    proc = subprocess.run([CHROMIUM, *_FLAGS, "--dump-dom", Path(path).resolve().as_uri()], capture_output=True,
                          text=True, timeout=180, check=True)
    return proc.stdout, _CONSOLE.findall(proc.stderr)


def screenshot(path: Path, png: Path, width: int = 1300, height: int = 1600) -> None:
    subprocess.run([CHROMIUM, *_FLAGS, f"--screenshot={png}", f"--window-size={width},{height}",
                    "--hide-scrollbars", Path(path).resolve().as_uri()], capture_output=True, timeout=180, check=True)


class Elements(HTMLParser):
    """Every element and attribute of a DOM dump, to check that nothing from a result file became
    markup: tags, attributes and the text of script elements."""

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self._in_script = False
        self.scripts: list[str] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, k, v or "") for k, v in attrs]
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
