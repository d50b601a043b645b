"""`mailticket report --plot FILE.png`: one PNG, three panels, from what ``store.report`` computed.

matplotlib is optional (the extra ``report``): it is imported here, inside the function, and only
its object API with the Agg canvas is used (no pyplot, no global state, no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mailticket.sla.clocks import TARGETS

INSTALL_HINT = "report --plot needs matplotlib: pip install 'mailticket[report]'"


class PlotUnavailable(Exception):
    """matplotlib is not installed."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def require() -> None:
    """PlotUnavailable when matplotlib cannot be imported (checked before any work is done)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable() from exc


def draw(report: Mapping[str, Any], response_hours: Sequence[float], path: Path) -> None:
    """Weekly ticket volume, the first-response time histogram (hours) and SLA compliance per target (%)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise PlotUnavailable() from exc

    figure = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    volume, times, sla = figure.subplots(1, 3)
    period = report.get("period", {})
    scope = f"{period.get('since') or 'start'} .. {period.get('until') or 'now'}"
    if period.get("queue"):
        scope += f", queue {period['queue']}"
    figure.suptitle(f"mailticket report: {scope}")

    weeks = list(report.get("weekly", []))
    positions = list(range(len(weeks)))
    volume.bar(positions, [w["created"] for w in weeks], color="#4c72b0")
    step = max(1, len(weeks) // 12)  # at most ~12 labels
    volume.set_xticks(positions[::step], [w["week"] for w in weeks][::step], rotation=45, ha="right")
    volume.set_title("tickets created per week")
    volume.set_ylabel("tickets")
    volume.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not weeks:
        volume.text(0.5, 0.5, "no tickets", ha="center", va="center", transform=volume.transAxes)

    if response_hours:
        times.hist(list(response_hours), bins=min(30, max(5, len(response_hours) // 2)), color="#55a868")
    else:
        times.text(0.5, 0.5, "no first responses", ha="center", va="center", transform=times.transAxes)
    times.set_title("time to first response")
    times.set_xlabel("hours (calendar)")
    times.set_ylabel("tickets")
    times.yaxis.set_major_locator(MaxNLocator(integer=True))

    figures = report.get("sla", {})
    compliance = [figures.get(name, {}).get("compliance") for name in TARGETS]
    percent = [100 * c if c is not None else 0.0 for c in compliance]
    bars = sla.bar(list(range(len(TARGETS))), percent, color="#c44e52")
    sla.set_xticks(list(range(len(TARGETS))), [name.replace("_", " ") for name in TARGETS])
    for bar, value in zip(bars, compliance, strict=True):
        label = f"{100 * value:.0f}%" if value is not None else "n/a"
        sla.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    sla.set_ylim(0, 105)
    sla.set_title("SLA compliance: met / (met + missed)")
    sla.set_ylabel("%")

    figure.savefig(path, format="png", dpi=100)
