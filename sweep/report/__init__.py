"""An HTML report of a sweep: what prefix caching buys, per model, in pictures and tables, and
the capacity at an SLO.

``write_report(DIR)`` writes ``DIR/report/``::

    index.html        opens from the file system: no server, no internet, images beside it
    fig01-*.png ...   matplotlib (Agg) figures
    summary.csv       one row per cell (every varied axis), mean and 95% CI over seeds
    caching.csv       each caching mode against ``off``, cell by cell (when the sweep varies caching)
    capacity-*.csv    the boundary per cell at the SLO (with ``slo=``, or from a capacity search)
    cluster.csv       per cell of a sweep over routers, replicas or CPU tiers: hit rate, TTFT, imbalance

The parts, each one job:

    roles       which column is load (x), memory (y), caching, facets
    cells       what holds per cell: steady / transient / overloaded, run length, caching verdict
    findings    the sentences, counted over the same cells so they cannot contradict each other
    capacity    capacity at the SLO: boundaries, users per GPU, what caching buys
    cluster     routers and CPU tiers (sweeps over cluster.* and engine.cpu_offload_gib)
    heatmaps    heatmap panels with their marks;  lines: line figures ("(same)", clipped CIs, SLO)
    tables      the HTML tables;  sections: one section per model;  page: the page itself
    build       write_report: the order of things
"""

from sweep.report.build import SUMMARY_METRICS, write_report
from sweep.report.cells import HELP_THRESHOLD
from sweep.report.roles import BASELINE, Roles, infer_roles

__all__ = ["BASELINE", "HELP_THRESHOLD", "SUMMARY_METRICS", "Roles", "infer_roles", "write_report"]
