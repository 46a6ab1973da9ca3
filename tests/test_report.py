"""Tests for vaekit.report: a fake run folder -> one self-contained, escaped HTML file."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest
import torch
import yaml

from vaekit import plots
from vaekit.report import write_report

EVAL = {
    "nll": 88.5612,
    "elbo": -92.3456,
    "rec": 66.1,
    "kl": 26.2456,
    "bits_per_dim": 0.16297,
    "active_units": 23,
}


class _Tables(HTMLParser):
    """Collects every table as a list of rows of cell texts, and every tag with its attrs."""

    def __init__(self):
        super().__init__()
        self.tables, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


def _table_with_header(parsed: _Tables, header: list[str]) -> dict[str, list[str]]:
    for t in parsed.tables:
        if t and t[0] == header:
            return {row[0]: row[1:] for row in t[1:]}
    raise AssertionError(f"no table with header {header}; headers: {[t[0] for t in parsed.tables]}")


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run_42"
    run.mkdir()
    config = {
        "model": {"kind": "gated", "latent_dim": 40, "hidden": [300, 300]},
        "objective": {"name": "elbo", "beta": 1.0},
        "dataset": "mnist",
        "note": "<script>alert('x')</script> & more",
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    for epoch in (1, 2):
        for i, loss in enumerate((10.0, 20.0, 30.0)):
            rows.append(
                {
                    "step": 3 * epoch + i,
                    "epoch": epoch,
                    "split": "train",
                    "loss": loss * epoch,
                    "kl": 1.5,
                }
            )
        rows.append(
            {
                "step": 3 * epoch + 3,
                "epoch": epoch,
                "split": "valid",
                "loss": 25.0 * epoch,
                "kl": 1.25,
            }
        )
    lines = [json.dumps(r) for r in rows] + ['{"step": 99, "epo']  # a line cut by a crash
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "eval.json").write_text(json.dumps(EVAL))
    plots.save_image_grid(torch.rand(4, 1, 6, 6), run / "samples.png", scale=1)
    plots.save_bar(torch.rand(5), run / "kl_per_dim.png", "KL per dim")
    return run


def test_report_contents(run_dir):
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    html = out.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert "<title>run_42" in html and "<h1>run_42</h1>" in html

    evals = _table_with_header(parsed, ["metric", "value", "unit", "meaning"])
    assert evals["nll"][:2] == ["88.5612", "nats"]
    assert evals["elbo"][:2] == ["-92.3456", "nats"]
    assert evals["bits_per_dim"][:2] == ["0.16297", "bits/dim"]
    assert evals["active_units"][0] == "23"

    final = _table_with_header(parsed, ["metric", "train", "valid", "unit"])
    assert final["loss"] == ["40", "50", "nats"]  # epoch 2: mean(20, 40, 60) and 50
    assert final["kl"] == ["1.5", "1.25", "nats"]
    assert "Final epoch (2)" in html
    assert "1 unreadable line(s)" in html

    config = _table_with_header(parsed, ["key", "value"])  # the first group: top-level scalars
    assert config["dataset"] == ["mnist"]
    model = [t for t in parsed.tables if ["latent_dim", "40"] in t]
    assert model and ["hidden", "[300, 300]"] in model[0]


def test_report_is_self_contained(run_dir):
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert "http" not in html.lower()
    imgs = [attrs["src"] for tag, attrs in _parse(html).tags if tag == "img"]
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in imgs)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in imgs}
    assert embedded == {(run_dir / n).read_bytes() for n in ("samples.png", "kl_per_dim.png")}
    tags = {tag for tag, _ in _parse(html).tags}
    assert not tags & {"script", "link", "iframe"}


def test_report_escapes_strings_from_the_run(run_dir):
    rows = [{"epoch": 1, "split": "valid", "<b>odd</b>": 1.0}]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    plots.save_bar(torch.rand(3), run_dir / "a<i>b.png")
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html
    assert "a<i>b" not in html and "a&lt;i&gt;b.png" in html


def test_report_for_an_unfinished_run(tmp_path):
    """No eval.json, no figures, no config: the page says so instead of failing."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 3.0}))
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No eval.json yet" in html and "No config.yaml" in html and "No PNG figures" in html
    assert "data:image/png" not in html


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [("config.yaml", "a: [1, 2", "config.yaml"), ("eval.json", "{nll: 3", "eval.json")],
    ids=["yaml", "json"],
)
def test_unparsable_files_raise(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path)


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        write_report(tmp_path / "nope")


def test_rewrite_replaces_the_report(run_dir):
    first = write_report(run_dir).read_text(encoding="utf-8")
    (run_dir / "eval.json").write_text(json.dumps({**EVAL, "nll": 87.25}))
    second = write_report(run_dir).read_text(encoding="utf-8")
    assert "88.5612" in first and "87.25" in second and "88.5612" not in second
    assert not list(run_dir.glob("*.tmp"))
    assert re.search(r"<html lang=\"en\">", second)
