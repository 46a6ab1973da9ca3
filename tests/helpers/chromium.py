"""Headless Chromium for the explorer page: load it with a test hook, read back the canvas."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest


def chromium_or_skip() -> str:
    """The Chromium executable; skips the test when it is not installed."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def run_page(exe: str, path, profile, test: dict, wait_ms: int | None = None) -> dict:
    """Open ``path`` (file://, name resolution off) with ``#test=JSON``; the hook's output.

    The page's hook moves its controls through their own input events and writes
    ``{"z", "before", "after"}`` (the code, the canvas RGBA bytes before and after) into
    ``<pre id="vaekit-test-output">``, which ``--dump-dom`` prints. ``wait_ms``: virtual time
    to let pass before the dump (a page that compiles WebAssembly first).
    """
    url = f"file://{path}#test=" + json.dumps(test, separators=(",", ":"))
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--dump-dom",
         *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []), url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    m = re.search(r'<pre id="vaekit-test-output"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert m and m.group(1), proc.stdout[-2000:]
    out = json.loads(html.unescape(m.group(1)))
    assert "error" not in out, out
    return out


def page_pixels(rgba: list, shape) -> np.ndarray:
    """Canvas RGBA bytes -> ``[C, H, W]`` values 0-255 (C = 1: the red channel)."""
    c, h, w = shape
    a = np.asarray(rgba, np.float64).reshape(h, w, 4)
    return a[..., :c].transpose(2, 0, 1) if c == 3 else a[None, ..., 0]
