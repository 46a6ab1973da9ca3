"""Read the code blocks of a Markdown page, run its Python blocks, find its `vaekit` command lines.

The conventions (also in docs/index.md, "Code in these pages"):

- The ```` ```python ```` blocks of one page run in order, in one namespace per page, like a
  notebook: a page's first block may set up names that later blocks use (LOSSES.md does).
  Each page runs in a fresh process (``python tests/helpers/docs.py PAGE``), so global state
  that a page sets (seeds, ``jax_enable_x64``, ``KERAS_BACKEND``) stays out of other tests.
- A line ``# out: TEXT`` (alone, or after code) states the block's printed output: when a block
  has such lines, its standard output must be exactly those lines, in order.
- A block that fails because a module of an optional extra (``pyproject.toml``'s
  ``[project.optional-dependencies]``, ``dev`` aside) is not installed is skipped, with the rest
  of its page (later blocks may use its names). Any other exception fails the page.
- Blocks fenced ``text``, ``console``, ``math``, ``yaml`` ... are not run. Command lines in
  ``bash``/``sh``/``shell`` blocks and in unlabelled fences are split at ``&&``, ``||``, ``|``
  and ``;``; each part that runs ``vaekit ...`` or ``python -m vaekit.cli ...`` is parsed by the
  CLI's own argparse parser (tests/test_docs.py), never executed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"bash", "sh", "shell", ""}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_OUT = re.compile(r"(?:^|\s)# out:(?: (?P<text>.*))?$")
_OPERATORS = {"&&", "||", "|", ";", "&"}
# distribution name -> import name, where they differ
_IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "scikit-image": "skimage",
    "mkdocs-material": "material",
}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (first word of the info string), text and first line."""

    lang: str
    text: str
    line: int  # 1-based line number of the block's first content line in the page


def blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of ``markdown`` (backticks or tildes, any indentation)."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        info = m["info"].strip().strip("{}").lstrip(".")
        lang = info.split()[0].lower() if info else ""
        body, j = [], i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence):
                if not close["info"].strip():
                    break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append(Block(lang, "\n".join(body) + "\n", i + 2))
        i = j + 1
    return out


def expected_output(code: str) -> list[str] | None:
    """The ``# out:`` lines of a block, in order; None when it has none (output not checked)."""
    found = [m["text"] or "" for line in code.splitlines() if (m := _OUT.search(line))]
    return [t.rstrip() for t in found] if found else None


def optional_modules() -> set[str]:
    """Import names of the packages in the optional extras of pyproject.toml (``dev`` aside)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"].get("optional-dependencies", {})
    names = set()
    for extra, reqs in extras.items():
        if extra == "dev":
            continue
        for req in reqs:
            dist = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]
            names.add(_IMPORT_NAMES.get(dist, dist.replace("-", "_")).lower())
    return names


def command_lines(code: str) -> list[list[str]]:
    """The ``vaekit`` argument lists of a shell block (``vaekit train --out x`` -> ``[train, ...]``)."""
    commands = []
    text = re.sub(r"\\\n", " ", code)  # continuation lines
    for line in text.splitlines():
        line = re.sub(r"^\s*\$ ", "", line)  # a console prompt
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split, lex.commenters = True, "#"
        segment: list[str] = []
        for token in [*lex, ";"]:
            if token not in _OPERATORS:
                segment.append(token)
                continue
            while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
                segment.pop(0)  # VAR=value prefixes
            if segment[:1] == ["vaekit"]:
                commands.append(segment[1:])
            elif "vaekit.cli" in segment and "-m" in segment:
                commands.append(segment[segment.index("vaekit.cli") + 1 :])
            segment = []
    return commands


def run_page(path: Path) -> list[dict]:
    """Run the Python blocks of ``path`` in order in one namespace; one result per block.

    Each result: ``line``, ``status`` ("ok" | "failed" | "skipped"), ``detail``. The page's
    remaining blocks are skipped after a failure or a missing optional module.
    """
    optional = optional_modules()
    namespace: dict = {"__name__": "__main__"}
    results: list[dict] = []
    stop = None
    for block in blocks(path.read_text(encoding="utf-8")):
        if block.lang not in PYTHON_LANGS:
            continue
        where = {"line": block.line}
        if stop is not None:
            results.append({**where, "status": "skipped", "detail": stop})
            continue
        # padded with newlines so tracebacks give the line numbers of the Markdown file
        source = "\n" * (block.line - 1) + block.text
        stdout, start = io.StringIO(), time.perf_counter()
        where["seconds"] = 0.0
        try:
            code = compile(source, str(path), "exec")
            with contextlib.redirect_stdout(stdout):
                exec(code, namespace)
        except ModuleNotFoundError as e:
            root = (e.name or "").split(".")[0].lower()
            if root in optional:
                stop = f"optional module {e.name!r} is not installed (from line {block.line})"
                results.append({**where, "status": "skipped", "detail": stop})
                continue
            stop = f"an earlier block failed (line {block.line})"
            results.append({**where, "status": "failed", "detail": traceback.format_exc()})
            continue
        except BaseException:  # noqa: BLE001 - report any failure of the documented code
            stop = f"an earlier block failed (line {block.line})"
            results.append({**where, "status": "failed", "detail": traceback.format_exc()})
            continue
        want, got = expected_output(block.text), stdout.getvalue().splitlines()
        if want is not None and [g.rstrip() for g in got] != want:
            stop = f"an earlier block failed (line {block.line})"
            detail = "printed output differs from its '# out:' lines\nexpected:\n"
            detail += "\n".join(want) + "\nprinted:\n" + "\n".join(got)
            results.append({**where, "status": "failed", "detail": detail})
            continue
        where["seconds"] = round(time.perf_counter() - start, 2)
        results.append({**where, "status": "ok", "detail": ""})
    return results


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # a page may plot; never open a window
    print(json.dumps(run_page(Path(sys.argv[1]))))
