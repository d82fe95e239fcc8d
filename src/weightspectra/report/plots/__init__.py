"""Pictures of spectra: per layer, per model, and per comparison of models.

matplotlib is imported inside the functions only (``import weightspectra`` never imports it).
Every drawing function takes an optional ``ax`` and returns the axes it drew on. Without ``ax``
a new figure is made: through pyplot when the caller has already imported pyplot (so notebooks
show it), otherwise as a bare :class:`~matplotlib.figure.Figure` on the Agg canvas, which touches
no global state. Nothing here calls ``plt.show()``; :func:`save_figure` and :func:`figure_png`
write files and bytes with the Agg canvas.

Columns of the random-matrix diagnostics (``mp_softrank``, ``bulk_max``, ``num_spikes``,
randomised eigenvalues) are drawn when a layer has them and left out quietly when it has not.
"""

from weightspectra.report.plots._figure import (
    ALPHA_BAND,
    FIT_COLOUR,
    MAX_SCAN_CANDIDATES,
    PAGE_STYLE,
    TYPE_COLOURS,
    figure_png,
    new_figure,
    page_style,
    save_figure,
    type_colour,
)
from weightspectra.report.plots.layer import (
    bulk_view,
    layer_figsize,
    layer_grid,
    layer_panels,
    layout_layer_figure,
    log_bin_count,
    log_binned_density,
    mp_edge,
    plot_esd_linear,
    plot_esd_loglog,
    plot_layer,
    plot_randomized,
    plot_xmin_scan,
    randomized_evals,
)
from weightspectra.report.plots.model import (
    metric_by_depth,
    plot_alpha_histogram,
    plot_alpha_over_steps,
    plot_alpha_overlay,
    plot_correlation_flow,
    plot_metric_depth,
    plot_metric_vs_accuracy,
    save_report_plots,
)
from weightspectra.report.verdict import alpha_band

__all__ = [
    "ALPHA_BAND",
    "FIT_COLOUR",
    "MAX_SCAN_CANDIDATES",
    "PAGE_STYLE",
    "TYPE_COLOURS",
    "alpha_band",
    "bulk_view",
    "figure_png",
    "layer_figsize",
    "layer_grid",
    "layer_panels",
    "layout_layer_figure",
    "log_bin_count",
    "log_binned_density",
    "metric_by_depth",
    "mp_edge",
    "new_figure",
    "page_style",
    "plot_alpha_histogram",
    "plot_alpha_over_steps",
    "plot_alpha_overlay",
    "plot_correlation_flow",
    "plot_esd_linear",
    "plot_esd_loglog",
    "plot_layer",
    "plot_metric_depth",
    "plot_metric_vs_accuracy",
    "plot_randomized",
    "plot_xmin_scan",
    "randomized_evals",
    "save_figure",
    "save_report_plots",
    "type_colour",
]
