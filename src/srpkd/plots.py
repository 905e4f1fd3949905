"""Matplotlib, loaded only by the commands that draw (reports, relation maps), and figures as PNG bytes."""
from __future__ import annotations

import io


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    # lazy: selecting the Agg backend is process-wide, so only a command that draws may do it (and it costs 0.5 s)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot fixes its backend when imported

    return plt


def figure_png(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()
