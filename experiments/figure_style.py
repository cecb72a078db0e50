"""One look for every paper figure (sweeps, results pages, sim versus real): serif text as in papers,
light grid, no top/right spines, TrueType fonts in PDFs; figures are saved as vector PDF and PNG."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib
from matplotlib.figure import Figure

__all__ = ["STYLE", "paper_style", "save_pdf_png"]

STYLE = {"font.family": "serif", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
         "legend.fontsize": 8, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "savefig.bbox": "tight", "pdf.fonttype": 42}


@contextmanager
def paper_style() -> Iterator[None]:
    """Figures created (and saved) inside take :data:`STYLE`."""
    with matplotlib.rc_context(STYLE):
        yield


def save_pdf_png(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.pdf`` and ``stem.png`` (150 dpi); returns both paths. The PDF carries no
    creation date, so the same figure gives the same bytes (results can be committed and diffed)."""
    pdf, png = stem.with_suffix(".pdf"), stem.with_suffix(".png")
    fig.savefig(pdf, metadata={"CreationDate": None})
    fig.savefig(png, dpi=150)
    return [pdf, png]
