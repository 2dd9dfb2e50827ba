"""Writing the applications' figures: one function, so every PNG a command leaves is laid
out, written and its figure freed the same way."""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, path, dpi: int) -> Path:
    """Lay ``fig`` out (``tight_layout``), write it to ``path`` (its folder made if need be;
    the format from the suffix) at ``dpi``, close it; returns the path."""
    import matplotlib.pyplot as plt  # deferred: slow to import; callers have it loaded already

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
