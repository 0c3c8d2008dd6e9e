"""Matplotlib helpers every stage's figures share (headless backend, one-shot layout)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tight(fig, rect=None) -> None:
    """``fig.tight_layout(rect=rect)`` applied once, as fixed subplot parameters: a figure
    that keeps tight_layout's engine is laid out again in every savefig (an extra draw of
    every text for each of the PNG and the SVG, a fifth of the drawing time)."""
    from matplotlib.layout_engine import TightLayoutEngine

    TightLayoutEngine(rect=rect if rect is not None else (0, 0, 1, 1)).execute(fig)
