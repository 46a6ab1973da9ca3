"""mkdocs hooks of the documentation site (mkdocs.yml: ``hooks``)."""

from __future__ import annotations

import re

_CELL = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.DOTALL)
_CODE = re.compile(r"<code>([^<]*)</code>")


def on_page_content(html: str, **kwargs) -> str:
    """Unescape ``\\|`` in the inline code of table cells.

    GitHub needs a pipe inside a table cell's code span escaped (``[mean \\| log σ]``) and
    drops the backslash; Python-Markdown keeps it. The pages are written for both.
    """

    def cell(m: re.Match) -> str:
        body = _CODE.sub(lambda c: "<code>" + c[1].replace("\\|", "|") + "</code>", m[2])
        return m[1] + body + m[3]

    return _CELL.sub(cell, html)
