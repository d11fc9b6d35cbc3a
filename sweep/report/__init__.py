"""An HTML report of a sweep: what prefix caching buys, per model, in pictures and tables, and
the capacity at an SLO.

``write_report(DIR)`` writes ``DIR/report/``::

    index.html        opens from the file system: no server, no internet, images beside it
    explore.html      every run on parallel coordinates (Plotly, the library inlined: no network)
    fig00-01-*.png    matplotlib (Agg) figures (figNN-: the model's part that drew it)
    overview.csv      the overview's numbers: the headline per model x GPU x TP x caching mode
    summary.csv       one row per cell (every varied axis), mean and 95% CI over seeds
    caching.csv       each caching mode against ``off``, cell by cell (when the sweep varies caching)
    capacity-*.csv    the boundary per cell at the SLO (with ``slo=``, or from a capacity search)
    cluster.csv       per cell of a sweep over routers, replicas or CPU tiers: hit rate, TTFT, imbalance

The parts, each one job:

    overview    the question answered first: the headline per model x GPU x TP and caching mode
    importance  which axes move the headline (variance shares, partial dependence, sentences)
    digest      a handful of sentences per model, each naming its evidence
    explore     explore.html, every run filterable by any axis
    models      one section per model (one figure over its facet values);  workers: in parallel
    roles       which column is load (x), memory (y), caching, facets
    cells       what holds per cell: steady / transient / overloaded, run length, caching verdict
    findings    the sentences, counted over the same cells so they cannot contradict each other
    capacity    capacity at the SLO: boundaries, users per GPU, what caching buys
    cluster     routers and CPU tiers (sweeps over cluster.* and engine.cpu_offload_gib)
    heatmaps    heatmap panels with their marks;  lines: line figures ("(same)", clipped CIs, SLO)
    tables      the HTML tables;  sections: a model's (facet value's) figures and tables
    page        the page itself, its Sections in order
    build       write_report: the order of things (PARTS: each adds its Section to the page)
"""

from sweep.report.build import SUMMARY_METRICS, write_report
from sweep.report.cells import HELP_THRESHOLD
from sweep.report.roles import BASELINE, Roles, infer_roles

__all__ = ["BASELINE", "HELP_THRESHOLD", "SUMMARY_METRICS", "Roles", "infer_roles", "write_report"]
