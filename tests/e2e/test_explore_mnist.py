"""`vaekit explore` on a real MNIST run, the page checked in headless Chromium (slow)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers.chromium import chromium_or_skip, page_pixels, run_page
from vaekit import latent
from vaekit.data import DataNotFoundError, mnist


@pytest.mark.slow
def test_explore_page_of_a_default_mnist_run(tmp_path):
    try:
        mnist(binarize="static")
    except DataNotFoundError:
        pytest.skip("MNIST is not in the cache: run `vaekit data fetch mnist`")
    exe = chromium_or_skip()
    run = tmp_path / "run"
    for args in (
        ["train", "--out", str(run), "--epochs", "1", "--max-train-examples", "3000",
         "--eval-samples", "5", "--quiet"],
        ["explore", str(run)],
    ):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "vaekit.cli", *args], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    page = (run / "explore.html").read_text()
    assert len(page) < 2_500_000  # the default MLP decoder (40-300-300-784): ~1.9 MB
    data = json.loads(re.search(r'id="vaekit-data">(.*?)</script>', page, re.S).group(1))
    assert list(data["attributes"]) == [f"digit {k}" for k in range(10)]
    unit = data["units"][0]["unit"]
    out = run_page(exe, run / "explore.html", tmp_path / "profile", {"a": 0, "units": {unit: -3}})
    z = np.array(data["codes"][0])
    z[unit] -= 3
    np.testing.assert_allclose(out["z"], z, atol=1e-6)
    from vaekit.training.run import load_run

    model, _, _ = load_run(run)
    expected = latent.decode(model, torch.tensor(z, dtype=torch.float32), unit=True)
    after = page_pixels(out["after"], (1, 28, 28))
    assert np.abs(after - page_pixels(out["before"], (1, 28, 28))).max() >= 2
    np.testing.assert_allclose(
        after, (expected.reshape(1, 28, 28).numpy() * 255).round(), atol=1.01
    )
