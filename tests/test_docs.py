"""The documentation runs: every Python block of README.md and docs/*.md, every `vaekit ...`
command line in their shell blocks, and the site build (`mkdocs build --strict`).

The conventions for code in the pages are in tests/helpers/docs.py and docs/index.md.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.helpers.docs import (
    PYTHON_LANGS,
    ROOT,
    SHELL_LANGS,
    blocks,
    command_lines,
    expected_output,
)

RUNNER = ROOT / "tests" / "helpers" / "docs.py"
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
IDS = [str(p.relative_to(ROOT)) for p in PAGES]
# the pages with Python blocks (each runs in its own interpreter: a few seconds of imports)
CODE_PAGES = [
    p for p in PAGES if any(b.lang in PYTHON_LANGS for b in blocks(p.read_text(encoding="utf-8")))
]


def _run_page(path: Path, cwd: Path) -> list[dict]:
    """Run one page's Python blocks in a fresh interpreter (tests/helpers/docs.py)."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"the block runner crashed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("page", CODE_PAGES, ids=[str(p.relative_to(ROOT)) for p in CODE_PAGES])
def test_python_blocks_run(page, tmp_path):
    """Each Python block of the page runs (in order, one namespace) and prints its `# out:`."""
    results = _run_page(page, tmp_path)
    failed = [r for r in results if r["status"] == "failed"]
    assert not failed, "\n\n".join(f"{page.name}:{r['line']}\n{r['detail']}" for r in failed)
    skipped = [r for r in results if r["status"] == "skipped"]
    if skipped:
        pytest.skip(f"{len(skipped)} block(s) of {page.name}: {skipped[0]['detail']}")


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_vaekit_command_lines_parse(page):
    """Every `vaekit ...` line in a shell block is accepted by the CLI's own parser, and a
    `vaekit train` line without --config/--resume gives a valid run config (flags the chosen
    objective or model does not use are refused there)."""
    from vaekit import cli
    from vaekit.config import load_config

    commands = [
        (b.line, argv)
        for b in blocks(page.read_text(encoding="utf-8"))
        if b.lang in SHELL_LANGS
        for argv in command_lines(b.text)
    ]
    errors = []
    for line, argv in commands:
        parser = cli._parser()
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                args = parser.parse_args(argv)  # argparse prints usage and --help
        except SystemExit as e:
            if e.code != 0:  # 0: --help
                errors.append(f"{page.name}:{line}: vaekit {' '.join(argv)}: exit {e.code}")
            continue
        if args.command == "train" and not (args.config or args.resume):
            try:
                load_config(None, cli._overrides(args))
            except ValueError as e:
                errors.append(f"{page.name}:{line}: vaekit {' '.join(argv)}: {e}")
    assert not errors, "\n".join(errors)


# --- the runner itself: it must catch what it is there to catch -------------------------------

PAGE = """# a page
```python
x = 6 * 7
print(x)  # out: 42
```
Text, then a block that uses the first one's names:
```python
print(x + 1)
# out: 43
```
```text
not run
```
```bash
vaekit train --epochs 2 --out runs/x && vaekit eval runs/x --samples 10   # a comment
VAEKIT_DATA=/tmp/d python -m vaekit.cli data fetch mnist | tail -1
python benchmarks/x.py --out y
```
"""


def _results(tmp_path, text: str) -> list[dict]:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return _run_page(page, tmp_path)


def test_runner_reads_blocks_output_and_commands():
    found = blocks(PAGE)
    assert [b.lang for b in found] == ["python", "python", "text", "bash"]
    assert found[0].line == 3 and PAGE.splitlines()[found[0].line - 1] == "x = 6 * 7"
    assert expected_output(found[0].text) == ["42"] and expected_output(found[2].text) is None
    assert command_lines(found[3].text) == [
        ["train", "--epochs", "2", "--out", "runs/x"],
        ["eval", "runs/x", "--samples", "10"],
        ["data", "fetch", "mnist"],
    ]


def test_runner_finds_the_readme_commands():
    # guards the extraction: the README's quick start and command-line sections are found
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = [
        argv for b in blocks(readme) if b.lang in SHELL_LANGS for argv in command_lines(b.text)
    ]
    assert ["data", "fetch", "mnist"] in found and ["train", "--out", "runs/mnist"] in found
    assert sum(argv[0] == "train" for argv in found) >= 10


def test_runner_runs_a_page_in_one_namespace(tmp_path):
    assert [r["status"] for r in _results(tmp_path, PAGE)] == ["ok", "ok"]


def test_runner_fails_a_wrong_output_and_skips_the_rest(tmp_path):
    wrong = PAGE.replace("# out: 43", "# out: 44")
    results = _results(tmp_path, wrong)
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert "expected:\n44\nprinted:\n43" in results[1]["detail"]
    raising = "```python\n1 / 0\n```\n```python\nprint(1)\n```\n"
    results = _results(tmp_path, raising)
    assert [r["status"] for r in results] == ["failed", "skipped"]
    assert (
        "ZeroDivisionError" in results[0]["detail"] and 'page.md", line 2' in results[0]["detail"]
    )


def test_runner_skips_only_a_missing_optional_extra(tmp_path):
    # a missing module of an optional extra skips the page; any other missing module fails it
    fake = "```python\nimport sys\nsys.modules['onnx'] = None\nimport onnx\n```\n"
    assert [r["status"] for r in _results(tmp_path, fake)] == ["skipped"]
    typo = "```python\nimport nmupy\n```\n"
    assert [r["status"] for r in _results(tmp_path, typo)] == ["failed"]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: any warning (a broken link, a docstring griffe cannot parse, a
    page missing from the configuration) fails. Needs the docs extra (the dev extra has it)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (tmp_path / "site" / "answered.html").is_file()
    api = (tmp_path / "site" / "api" / "objectives.html").read_text(encoding="utf-8")
    assert 'id="vaekit.objectives.ELBO"' in api  # the reference is generated from docstrings
