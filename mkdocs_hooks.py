"""mkdocs hooks of the documentation site (mkdocs.yml: ``hooks``)."""

from __future__ import annotations

import re

_CELL = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.DOTALL)
_CODE = re.compile(r"<code>([^<]*)</code>")
# a Sphinx role left in a rendered docstring: :class:<code>~vaekit.data.Dataset</code>
_ROLE = re.compile(
    r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(?P<tilde>~?)(?P<name>[\w.]+)(?P<call>\(\))?</code>"
)


def _unescape_cells(html: str) -> str:
    """A table cell's ``a \\| b`` in inline code becomes ``a | b``.

    GitHub needs a pipe inside a table cell's code span escaped (``[mean \\| log σ]``) and
    drops the backslash; Python-Markdown keeps it. The pages are written for both.
    """

    def cell(m: re.Match) -> str:
        body = _CODE.sub(lambda c: "<code>" + c[1].replace("\\|", "|") + "</code>", m[2])
        return m[1] + body + m[3]

    return _CELL.sub(cell, html)


def _page_module(src_uri: str) -> str | None:
    """The module an API page documents: ``api/interop_jax.md`` -> ``vaekit.interop.jax``."""
    if not src_uri.startswith("api/"):
        return None
    stem = src_uri[len("api/") : -len(".md")]
    return "vaekit" if stem == "vaekit" else "vaekit." + stem.replace("_", ".")


def _link_roles(html: str, module: str | None) -> str:
    """Docstrings' Sphinx roles (``:class:`X```) become mkdocs-autorefs cross-references.

    A name without a dot is looked up in the page's module first. An unresolved reference
    (``optional``) stays plain code, without a warning.
    """

    def ref(m: re.Match) -> str:
        name = m["name"]
        shown = (name.rsplit(".", 1)[-1] if m["tilde"] else name) + (m["call"] or "")
        if "." not in name and module:
            target = f'identifier="{module}.{name}" slug="{name}"'
        else:
            target = f'identifier="{name}"'
        return f"<autoref {target} optional><code>{shown}</code></autoref>"

    return _ROLE.sub(ref, html)


def on_page_content(html: str, page, **kwargs) -> str:
    """Post-process every rendered page (before mkdocs-autorefs resolves references)."""
    return _link_roles(_unescape_cells(html), _page_module(page.file.src_uri))
