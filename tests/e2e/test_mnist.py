"""End to end on real MNIST through the installed `vaekit` command (skipped without the data)."""

import json
import shutil
import subprocess
import sys

import pytest

from vaekit.data import DataNotFoundError, mnist


@pytest.fixture(scope="module")
def mnist_available():
    try:
        mnist(binarize="static")
    except DataNotFoundError:
        pytest.skip("MNIST is not in the cache: run `vaekit data fetch mnist`")


def _vaekit(*args, timeout=600):
    cmd = [sys.executable, "-m", "vaekit.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_eval_report_on_mnist(mnist_available, tmp_path):
    run = tmp_path / "run"
    proc = _vaekit(
        "train", "--out", str(run), "--epochs", "2", "--max-train-examples", "5000",
        "--hidden", "200,200", "--latent-dim", "16", "--eval-samples", "20", "--quiet",
    )  # fmt: skip
    assert "NLL" in proc.stdout
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "best.pt", "eval.json",
                 "report.html", "samples.png", "reconstructions.png", "traversal.png",
                 "latent.png", "loss_curves.png", "kl_per_dim.png"):  # fmt: skip
        assert (run / name).stat().st_size > 0, name
    result = json.loads((run / "eval.json").read_text())
    # an untrained Bernoulli decoder scores ~543 nats (784 ln 2); two short epochs get well below 250
    assert 60 < result["nll"] < 250 and result["elbo"] < -result["nll"] + 1.0
    assert result["examples"] == 10000 and 0 < result["active_units"] <= 16
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6 and "http://" not in html


@pytest.mark.slow
def test_report_renders_in_headless_chromium(mnist_available, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    run = tmp_path / "run"
    _vaekit("train", "--out", str(run), "--epochs", "1", "--max-train-examples", "2000",
            "--eval-samples", "5", "--quiet")  # fmt: skip
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
         f"file://{run / 'report.html'}"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000  # a rendered page with figures, not a blank one
