"""A self-contained HTML report of one run folder.

``write_report(run_dir)`` reads ``config.yaml``, ``metrics.jsonl``, the optional ``eval.json``
and every ``*.png`` in the folder, and writes ``run_dir/report.html``: one file with the
images embedded as base64 data URIs and the CSS inline, so it can be mailed, archived or
opened offline. No JavaScript and no external assets. Every string taken from the run
(config values, metric names, file names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections import defaultdict
from html import escape
from pathlib import Path

import yaml

from vaekit._files import atomic_write_text

__all__ = ["write_report"]

# Units and one-line meanings of the eval.json keys (DESIGN.md: per-example values, nats).
_EVAL_KEYS: dict[str, tuple[str, str]] = {
    "nll": ("nats", "negative log-likelihood −log p(x), importance-sampled"),
    "elbo": ("nats", "evidence lower bound, signed (≤ log p(x))"),
    "rec": ("nats", "reconstruction term −E_q[log p(x|z)]"),
    "kl": ("nats", "KL(q(z|x) ‖ p(z))"),
    "loss": ("nats", "objective value minimised"),
    "bound": ("nats", "the objective's lower bound on log p(x)"),
    "bits_per_dim": ("bits/dim", "nll / (number of dimensions · ln 2)"),
    "active_units": ("latent dims", "latent dimensions in use (Burda et al. 2015)"),
    "samples": ("", "importance samples per example"),
    "accuracy": ("fraction", "test classification accuracy of argmax q(y|x) (M2)"),
    "confusion": ("counts", "confusion matrix, rows true class, columns predicted (M2)"),
    "samples_per_class": ("", "importance samples per example and class y (M2, y summed out)"),
    "mig": ("score in [0, 1]", "mutual information gap (Chen et al. 2018)"),
    "dci_disentanglement": ("score in [0, 1]", "DCI disentanglement (Eastwood & Williams 2018)"),
    "dci_completeness": ("score in [0, 1]", "DCI completeness"),
    "dci_informativeness": ("score in [0, 1]", "DCI informativeness: factor prediction accuracy"),
    "sap": ("score in [0, 1]", "separated attribute predictability (Kumar et al. 2018)"),
    # issue 20: DCI (boosted trees) and SAP (linear SVMs) as disentanglement_lib computes them
    "dci_informativeness_train": ("score in [0, 1]", "DCI informativeness on the training set"),
    "modularity": ("score in [0, 1]", "modularity (Ridgeway & Mozer 2018)"),
    "explicitness_train": ("ROC-AUC", "explicitness on the training set (Ridgeway & Mozer 2018)"),
    "explicitness_test": ("ROC-AUC", "explicitness on held-out codes (Ridgeway & Mozer 2018)"),
    "fast_dci_logistic_disentanglement": ("score in [0, 1]", "fast variant, not the reference"),
    "fast_dci_logistic_completeness": ("score in [0, 1]", "fast variant, not the reference"),
    "fast_dci_logistic_informativeness": ("score in [0, 1]", "fast variant, not the reference"),
    "fast_sap_nearest_mean": ("score in [0, 1]", "fast variant, not the reference"),
    "factor_vae": ("score in [0, 1]", "FactorVAE majority-vote accuracy (Kim & Mnih 2018)"),
    "beta_vae": ("score in [0, 1]", "beta-VAE linear-classifier accuracy (Higgins et al. 2017)"),
}
# Headline cards at the top, when eval.json has them.
_HEADLINE = {
    "nll": "test NLL",
    "elbo": "test ELBO",
    "bits_per_dim": "bits per dim",
    "active_units": "active units",
    "accuracy": "test accuracy",
}
_NATS_KEYS = {"loss", "rec", "kl", "elbo", "nll", "bound"}
_CAPTIONS = (  # (substring of the file name, caption); first match wins
    ("loss", "Training curves: train and valid, per-example nats"),
    ("terms", "The objective's own terms (total correlation, multiplier, perplexity, ...)"),
    ("curve", "Training curves"),
    ("recon", "Inputs and their reconstructions"),
    ("analog", "Fix z, vary y: one row per test example's z, one column per class (M2)"),
    ("confusion", "Confusion matrix of argmax q(y|x) on the test set (rows: true class)"),
    ("sample", "Samples from the model"),
    ("travers", "Latent traversal: one row per latent dimension"),
    ("scatter", "Latent codes in 2-D"),
    ("latent", "Latent codes"),
    ("kl", "KL per latent dimension (nats)"),
    ("hist", "Histogram"),
)
_NOT_METRICS = {"step", "epoch", "split"}


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html`` from the run's files and return its path.

    Reads ``config.yaml`` (``yaml.safe_load``), ``metrics.jsonl`` (one JSON object per line;
    unreadable lines, such as a line cut short by a crash, are skipped and counted),
    ``eval.json`` if present, and all ``*.png`` files (sorted by name). A missing config or
    metrics file is reported in the page rather than raised, so a report can be written for
    an interrupted run.

    Raises:
        ValueError: ``run_dir`` is not a directory, or ``config.yaml`` / ``eval.json`` cannot
            be parsed.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run_dir must be an existing directory; received {str(run)!r}")
    config = _read_structured(run / "config.yaml", yaml.safe_load)
    evals = _read_structured(run / "eval.json", json.loads)
    rows, bad_lines = _read_jsonl(run / "metrics.jsonl")
    images = sorted(run.glob("*.png"))

    body = [
        _header(run, rows, evals),
        _config_section(config),
        _eval_section(evals),
        _final_epoch_section(rows, bad_lines, (run / "metrics.jsonl").exists()),
        _figures_section(images),
    ]
    if (run / "explore.html").is_file():  # written by `vaekit explore`
        body.insert(1, '<p><a href="explore.html">Explore the latent space</a> (explore.html)</p>')
    page = _PAGE.format(title=escape(run.resolve().name), css=_CSS, body="\n".join(body))
    out = run / "report.html"
    # Write then rename, so a browser that has the report open never reads half a file.
    return atomic_write_text(out, page)


# ---------------------------------------------------------------------------- reading


def _read_structured(path: Path, parse):
    if not path.exists():
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"could not parse {path}: {err}") from None


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    if not path.exists():
        return rows, bad
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _flatten(d, prefix: str = "") -> list[tuple[str, object]]:
    """Nested mappings -> dotted keys, in file order."""
    if not isinstance(d, dict):
        return [(prefix or "value", d)]
    out = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out += _flatten(v, key) if isinstance(v, dict) and v else [(key, v)]
    return out


# ---------------------------------------------------------------------------- formatting


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v) -> str:
    """A value as escaped HTML text: numbers to 6 significant digits, long lists shortened."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, list | tuple):
        shown = ", ".join(_fmt(x) for x in v[:8])
        more = f", … ({len(v)} values)" if len(v) > 8 else ""
        return f"[{shown}{more}]"
    return escape(str(v))


def _unit(key: str) -> str:
    base = key.rsplit(".", 1)[-1]
    if base in _EVAL_KEYS:
        return _EVAL_KEYS[base][0]
    if "bits" in base or base.endswith("bpd"):
        return "bits/dim"
    if base.endswith("_nats") or _NATS_KEYS & set(base.split("_")):  # kl_per_dim, iwae_nll
        return "nats"
    return ""


def _table(head: list[str], rows: list[list[str]], numeric: range | set[int] = range(0)) -> str:
    """``head`` is plain text (escaped here); cells are already-escaped HTML.

    Columns whose index is in ``numeric`` are right-aligned in tabular figures.
    """
    ths = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    )
    trs = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>"


def _section(title: str, inner: str, extra_class: str = "") -> str:
    cls = f' class="{extra_class}"' if extra_class else ""
    return f"<section{cls}><h2>{escape(title)}</h2>{inner}</section>"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


# ---------------------------------------------------------------------------- sections


def _header(run: Path, rows: list[dict], evals) -> str:
    epochs = [r["epoch"] for r in rows if _is_number(r.get("epoch"))]
    steps = [r["step"] for r in rows if _is_number(r.get("step"))]
    facts = []
    if epochs:
        facts.append(f"{_fmt(max(epochs))} epochs")
    if steps:
        facts.append(f"{_fmt(max(steps))} steps")
    facts.append(f"folder {escape(str(run.resolve()))}")
    cards = ""
    if isinstance(evals, dict):
        items = [
            f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value">{_fmt(evals[k])}</div>'
            f'<div class="unit">{escape(_unit(k))}</div></div>'
            for k, label in _HEADLINE.items()
            if _is_number(evals.get(k))
        ]
        cards = f'<div class="cards">{"".join(items)}</div>' if items else ""
    return (
        f"<header><h1>{escape(run.resolve().name)}</h1>"
        f'<p class="facts">{" · ".join(facts)}</p>{cards}</header>'
    )


def _config_section(config) -> str:
    title = "Configuration"
    if config is None:
        return _section(title, _note("No config.yaml in this folder."))
    if not config:
        return _section(title, _note("config.yaml is empty."))
    # One small table per top-level mapping (model, objective, training, ...), side by side;
    # top-level scalars go together in a first table.
    groups: dict[str, list[list[str]]] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if isinstance(value, dict) and value:
                groups[str(key)] = [[escape(k), _fmt(v)] for k, v in _flatten(value)]
            else:
                groups.setdefault("", []).append([escape(str(key)), _fmt(value)])
    else:
        groups[""] = [["value", _fmt(config)]]
    groups = {"": groups.pop("")} | groups if "" in groups else groups
    tables = "".join(
        f'<div class="group">{f"<h3>{escape(name)}</h3>" if name else "<h3>run</h3>"}'
        f"{_table(['key', 'value'], rows)}</div>"
        for name, rows in groups.items()
    )
    return _section(title, f'<div class="groups">{tables}</div>', "config")


def _eval_section(evals) -> str:
    if evals is None:
        return _section("Evaluation", _note("No eval.json yet: run `vaekit eval RUN_DIR`."))
    rows = []
    for k, v in _flatten(evals):
        meaning = _EVAL_KEYS.get(k.rsplit(".", 1)[-1], ("", ""))[1]
        rows.append([escape(k), _fmt(v), escape(_unit(k)), escape(meaning)])
    table = _table(["metric", "value", "unit", "meaning"], rows, numeric={1})
    return _section("Evaluation (test set, from eval.json)", table)


def _final_epoch_section(rows: list[dict], bad_lines: int, exists: bool) -> str:
    title = "Final epoch"
    if not exists:
        return _section(title, _note("No metrics.jsonl in this folder."))
    skipped = (
        _note(f"{bad_lines} unreadable line(s) of metrics.jsonl skipped.") if bad_lines else ""
    )
    if not rows:
        return _section(title, _note("metrics.jsonl holds no rows yet.") + skipped)
    epochs = [r["epoch"] for r in rows if _is_number(r.get("epoch"))]
    if epochs:
        last = max(epochs)
        final = [r for r in rows if r.get("epoch") == last]
        title = f"Final epoch ({_fmt(last)})"
    else:  # no epoch column: the last row of each split
        by_split = {str(r.get("split", "train")): r for r in rows}
        final = list(by_split.values())
    # values[key][split] -> list; rows logged per batch are averaged over the epoch.
    values: dict = defaultdict(lambda: defaultdict(list))
    counts: dict = defaultdict(int)
    for r in final:
        split = str(r.get("split", "train"))
        counts[split] += 1
        for k, v in r.items():
            if k not in _NOT_METRICS and _is_number(v) and math.isfinite(v):
                values[k][split].append(float(v))
    splits = sorted(counts, key=lambda s: ({"train": 0, "valid": 1, "test": 2}.get(s, 3), s))
    table_rows = [
        [
            escape(k),
            *[_fmt(sum(vs[s]) / len(vs[s])) if vs.get(s) else "—" for s in splits],
            escape(_unit(k)),
        ]
        for k, vs in values.items()
    ]
    head = ["metric", *splits, "unit"]
    averaged = [f"{s}: mean of {counts[s]} rows" for s in splits if counts[s] > 1]
    note = _note("; ".join(averaged) + ".") if averaged else ""
    table = _table(head, table_rows, numeric=range(1, 1 + len(splits)))
    return _section(title, table + note + skipped)


def _caption(path: Path) -> tuple[int, str]:
    """(rank, caption): known figures first, in the order of ``_CAPTIONS``."""
    stem = path.stem.lower()
    for rank, (key, caption) in enumerate(_CAPTIONS):
        if key in stem:
            return rank, caption
    return len(_CAPTIONS), path.stem.replace("_", " ").replace("-", " ").capitalize()


def _figures_section(images: list[Path]) -> str:
    if not images:
        return _section("Figures", _note("No PNG figures in this folder."))
    figs = []
    for p in sorted(images, key=lambda p: (_caption(p)[0], p.name)):
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        name = escape(p.name)
        figs.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
            f'<figcaption>{escape(_caption(p)[1])} <span class="file">{name}</span>'
            "</figcaption></figure>"
        )
    return _section("Figures", f'<div class="figures">{"".join(figs)}</div>')


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · vaekit report</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
<footer>Written by vaekit.report from the files in this run folder. Log-densities are
per-example values in nats, summed over all data dimensions.</footer>
</main>
</body>
</html>
"""

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 16px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
.facts, .note, footer, .file { color: var(--muted); font-size: 13px; }
.facts { margin: 0 0 14px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px;
  background: var(--soft); }
.card .label { font-size: 13px; color: var(--muted); }
.card .value { font-size: 24px; font-weight: 600; color: var(--accent);
  font-variant-numeric: tabular-nums; }
.card .unit { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; font-size: 14px; min-width: 360px; }
th.num { text-align: right; }
th, td { padding: 5px 14px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td:first-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 13px; }
.groups { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
.groups table { min-width: 0; }
h3 { font-size: 14px; margin: 6px 0 6px; color: var(--muted); font-weight: 600; }
.config td:last-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 13px; word-break: break-word; }
.figures { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; border: 1px solid var(--line); border-radius: 8px;
  padding: 10px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; margin-top: 6px; }
.file { margin-left: 6px; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12px; }
footer { margin-top: 40px; border-top: 1px solid var(--line); padding-top: 10px; }
"""
