"""Import structure: one direction of imports (issue 14).

* every public module is an attribute after ``import vaekit`` (the heavy ones lazily);
* every module under ``src/vaekit`` imports on its own in a fresh interpreter, so nothing
  depends on what happened to be imported first;
* ``import vaekit`` stays light (no matplotlib);
* the module-level imports among vaekit modules form no cycle (a static check with ``ast``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vaekit

SRC = Path(vaekit.__file__).resolve().parent  # .../src/vaekit
ROOT = SRC.parent  # .../src

# modules that need an optional third-party package (an extra), by that package's name
OPTIONAL = {"vaekit.interop.jax": "jax", "vaekit.interop.keras": "keras"}
# leaves: they import no vaekit module except these stateless helpers
LEAF_HELPERS = {"vaekit._checks"}


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with vaekit importable from ``src/``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("KERAS_BACKEND", "torch")  # keras would otherwise look for tensorflow
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT.parent,
    )


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


# --- 1. public modules reachable after `import vaekit` ------------------------------------

PUBLIC = [
    "functional",
    "likelihoods",
    "posteriors",
    "priors",
    "objectives",
    "schedules",
    "quantizers",
    "evaluate",
    "data",
    "models",
    "metrics",
]
RUN_API = ["train", "evaluate_run", "sample_run", "load_run"]


def test_public_modules_are_attributes_after_import_vaekit():
    _check(
        _run(
            f"""
            import types
            import vaekit

            vaekit.evaluate.log_likelihood
            vaekit.metrics
            vaekit.data.mnist
            vaekit.models.VAE
            for name in {PUBLIC!r}:
                assert isinstance(getattr(vaekit, name), types.ModuleType), name
                assert name in dir(vaekit), name
            for name in {RUN_API!r}:
                assert callable(getattr(vaekit, name)), name
                assert name in dir(vaekit), name
            try:
                vaekit.no_such_name
            except AttributeError as e:
                assert "no_such_name" in str(e)
            else:
                raise AssertionError("vaekit.no_such_name did not raise AttributeError")
            """
        )
    )


def test_all_names_resolve():
    for name in vaekit.__all__:
        assert getattr(vaekit, name) is not None, name


# --- 2. every module imports on its own ---------------------------------------------------


def _all_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages([str(SRC)], prefix="vaekit.")]
    return ["vaekit", *sorted(names)]


# One fresh interpreter imports torch (which a fresh `import torch` in any vaekit module would
# load identically) and then forks once per module: each child starts with no vaekit module
# loaded and imports one module. Same check as one interpreter per module, without paying
# for torch's import 50 times.
_FORKING_DRIVER = """
import importlib, json, os, sys, traceback
import torch
assert not [m for m in sys.modules if m.split(".")[0] == "vaekit"]
errors = {}
for name in NAMES:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc()
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, encoding="utf-8", errors="replace") as f:
        errors[name] = f.read()
    _, status = os.waitpid(pid, 0)
    if status and not errors[name]:
        errors[name] = f"the child importing {name} exited with status {status}"
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def fresh_import_errors() -> dict[str, str]:
    """Module name -> traceback ('' if it imported) for an import in a fresh interpreter."""
    names = [m for m in _all_modules() if _installed(m)]
    if not hasattr(os, "fork"):
        return {m: "" if (p := _run(f"import {m}")).returncode == 0 else p.stderr for m in names}
    proc = _run(f"NAMES = {names!r}\n{_FORKING_DRIVER}", timeout=900)
    _check(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _installed(module: str) -> bool:
    extra = OPTIONAL.get(module)
    return extra is None or importlib.util.find_spec(extra) is not None


@pytest.mark.parametrize("module", _all_modules())
def test_module_imports_alone_in_a_fresh_interpreter(module, fresh_import_errors):
    if not _installed(module):
        pytest.skip(f"{module} needs the optional package {OPTIONAL[module]}")
    error = fresh_import_errors[module]
    assert not error, f"`import {module}` in a fresh interpreter failed:\n{error}"


def test_every_module_is_checked():
    # pkgutil sees the same modules as the static graph below (no stray file is skipped)
    assert set(_all_modules()) == set(_modules())


# --- 3. `import vaekit` stays light -------------------------------------------------------


def test_import_vaekit_does_not_pull_matplotlib_or_the_run_api():
    _check(
        _run(
            """
            import sys
            import vaekit

            heavy = sorted(
                m for m in ("matplotlib", "vaekit.training.run", "vaekit.plots") if m in sys.modules
            )
            assert not heavy, f"import vaekit imported {heavy}"
            """
        )
    )


# --- 4. no cycle among module-level imports -----------------------------------------------


def _modules() -> dict[str, Path]:
    """Every module under src/vaekit: dotted name -> file."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]):
    """Import statements that run when the module is imported: the module body, including
    its ``if``/``try``/``with`` blocks and class bodies, but not function bodies nor
    ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try | getattr(ast, "TryStar", ast.Try)):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_statements(block)
            for handler in node.handlers:
                yield from _import_time_statements(handler.body)
        elif isinstance(node, ast.With | ast.For | ast.While | ast.ClassDef):
            yield from _import_time_statements(node.body)


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules) -> set:
    """The dotted modules that ``node`` (in module ``name``) imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:  # relative: resolve against the importing module's package
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module
    out = {base}
    for alias in node.names:  # `from pkg import submodule` imports the submodule
        if f"{base}.{alias.name}" in modules:
            out.add(f"{base}.{alias.name}")
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module-level imports among vaekit modules: name -> the vaekit modules it runs.

    Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a.b.c``, so an import
    counts as an edge to the module and to each of its packages, except the importer's own
    packages (they are already being imported when the importer runs).
    """
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_time_statements(tree.body):
            for target in _imported(node, name, path.name == "__init__.py", modules):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_level_imports_form_no_cycle():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle among module-level imports: " + " -> ".join(cycle)


def test_cycle_finder_sees_cycles_and_edges():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    graph = _import_graph()
    assert "vaekit.outputs" in graph["vaekit.models.vae"]
    assert "vaekit.functional" in graph["vaekit.likelihoods"]  # `from vaekit import functional`
    assert "vaekit.models" in graph["vaekit.flows"]  # the package of models.networks runs too
    assert "vaekit.models" not in graph["vaekit.models.vae"]  # not its own package


@pytest.mark.parametrize("module", ["vaekit.outputs", "vaekit.models.networks"])
def test_leaf_modules_import_no_vaekit_module(module):
    deps = _import_graph()[module] - LEAF_HELPERS
    assert not deps, f"{module} should be a leaf but imports {sorted(deps)}"
