"""The plotting conventions every stage shares: matplotlib headless (no display on these machines), one figure per
PNG, closed after saving so that a long run does not accumulate open figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots(...)` on the Agg backend (imported late: most commands never plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig: Any, path: Path, dpi: int = 120) -> Path:
    """Lay out, write the PNG, close the figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
