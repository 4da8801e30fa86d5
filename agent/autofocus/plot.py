"""The figure of a validation: how far from focus each run was, against the images it had acquired.

Two panels (working-distance error, stigmator error), log scale, one line per trial and method (learned blue,
classical orange; failed runs dashed), with the success tolerances as horizontal lines. matplotlib (declared in
the ``autofocus`` extra) is imported here only, and without pyplot, so no GUI backend or global state is touched.
"""

from __future__ import annotations

from pathlib import Path

from agent.autofocus.validate import METHODS, ValidationReport

__all__ = ["plot_validation"]

_COLOURS = {"learned": "tab:blue", "classical": "tab:orange"}
# A run that ends exactly in focus has error 0, which a log axis cannot show: clamp to this floor.
_FLOOR_WD_UM = 1e-2
_FLOOR_STIG = 1e-3


def plot_validation(report: ValidationReport, path: Path) -> Path:
    """Write the traces of ``report`` as a PNG at ``path`` (folders created) and return the path."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 4.8), dpi=110, layout="constrained")
    ax_wd, ax_stig = fig.subplots(1, 2)
    for outcome in report.outcomes:
        style = "-" if outcome.success else "--"
        colour = _COLOURS[outcome.method]
        ax_wd.plot(
            outcome.trace_images,
            [max(v, _FLOOR_WD_UM) for v in outcome.trace_wd_err_um],
            style,
            color=colour,
            alpha=0.6,
            linewidth=1.0,
            marker=".",
            markersize=3,
        )
        ax_stig.plot(
            outcome.trace_images,
            [max(v, _FLOOR_STIG) for v in outcome.trace_stig_err],
            style,
            color=colour,
            alpha=0.6,
            linewidth=1.0,
            marker=".",
            markersize=3,
        )
    opts = report.options
    ax_wd.axhline(opts.wd_tol_um, color="grey", linewidth=0.8, linestyle=":")
    ax_stig.axhline(opts.stig_tol, color="grey", linewidth=0.8, linestyle=":")
    for ax, label in ((ax_wd, "|WD − reference| (µm)"), (ax_stig, "max |stigmator − reference| (units)")):
        ax.set_yscale("log")
        ax.set_xlabel("images acquired")
        ax.set_ylabel(label)
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    handles = []
    for method in METHODS:
        s = report.stats(method)
        images = f"{s.images_median:g}" if s.images_median is not None else "-"
        handles.append(
            Line2D(
                [],
                [],
                color=_COLOURS[method],
                label=f"{method}: {s.successes}/{s.trials} in focus, median {images} images",
            )
        )
    handles.append(Line2D([], [], color="black", linestyle="--", label="failed run"))
    handles.append(Line2D([], [], color="grey", linestyle=":", label="success tolerance"))
    ax_wd.legend(handles=handles, fontsize=8, loc="upper right")
    v = report.verdict
    fig.suptitle(
        f"autofocus validate: {v.backend}: {v.instrument} ({v.trials} trials, seed {v.seed}): "
        f"learned {'enabled' if v.enabled else 'NOT enabled'}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
