"""Self-contained HTML reports of an output folder: every picture is embedded as a data URI, so
``report.html`` can be mailed or archived on its own. Rendered with Jinja2, autoescaped: class
names come from user files (label lists, model metadata) and must not inject markup."""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

_ENVIRONMENT = Environment(
    loader=PackageLoader("agnostic_saliency.render", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    undefined=StrictUndefined,  # a missing field is a bug in the report, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)


def embedded_png(path: str | os.PathLike) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def number(value, digits: int = 3) -> str:
    """A table cell: floats rounded, None as a dash, NaN spelled out."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


_ENVIRONMENT.filters["number"] = number


def render_report(template: str, path: str | os.PathLike, **context) -> None:
    """Render ``templates/<template>`` with ``context`` into ``path`` (UTF-8)."""
    html = _ENVIRONMENT.get_template(template).render(**context)
    Path(path).write_text(html, encoding="utf-8")
