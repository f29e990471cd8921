"""Matplotlib figures as PNG bytes, for storage and reports (headless: the Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def png_bytes(figure: plt.Figure) -> bytes:
    """The figure as PNG; closes it (a sweep draws many and pyplot keeps every open one)."""
    sink = io.BytesIO()
    figure.savefig(sink, format="png")
    plt.close(figure)
    return sink.getvalue()
