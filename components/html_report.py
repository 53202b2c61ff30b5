"""Pieces of Relay's static HTML reports (lineage card, bake-off): they render offline, so plots are
embedded PNGs, and there are no scripts and no links out."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}pre{background:#f6f6f6;padding:.8em;"
         "overflow:auto;max-height:30em}img{max-width:100%}.fail{color:#b00;font-weight:bold}"
         ".pass{color:#070;font-weight:bold}")


def png_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def image_tag(path: Path) -> str:
    """A PNG file embedded as an <img>, or a note that it is missing."""
    if not path.is_file():
        return f"<p>(no {html.escape(path.name)})</p>"
    return png_tag(path.read_bytes(), path.name)


def figure_png(figure, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def legend_beside(axis) -> None:
    """The axis's legend to its right, outside the plot, where it covers no bar (save with bbox_inches="tight")."""
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def table(rows: list[tuple], header: tuple | None = None) -> str:
    """An HTML table; cells that start with '<' are markup, the rest is escaped text."""
    head = "<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell if str(cell).startswith('<') else html.escape(str(cell))}</td>"
                                     for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
