"""``safebench report``: tables, plots and one report page from a results directory.

``build_report(results_dir)`` loads every run (``store.load_runs``), reduces it to final
scores and writes into ``--out`` (default ``<results_dir>/report``)::

    report.md  report.html  .safebench-report
    tables/  verdict, per_env, aggregate, seeds_width, [seeds_separate], feasibility,
             [gain], [poi], runs_matrix, excluded, [evaluation], [throughput],
             [crosscheck], [against] (each as .md, .csv and .tex) and runs.csv (every
             run's final scores)
    figures/ curves_<env> (``--x time``: curves_time_<env>, over wall-clock time; ``--x
             both``: both), [against_<env>], aggregate_iqm, return_vs_cost, profiles
             (each as .png and .svg)

``report.md`` links the figures (``figures/*.png``); ``report.html`` is self-contained:
the PNGs are embedded as base64 data URIs, so the single file can be mailed or attached.
Both open with the verdict (per task and across tasks: the methods that respect the cost
limit, ranked by return, ties where the intervals overlap; the others with their cost),
then the protocol used (final-score mode, bootstrap repetitions, confidence, cost limits,
reference algorithm, run counts and every run that was left out and why).

A cost-limit sweep (an experiment that gives an env several ``cost_limit`` values) makes
each (env, limit) a task of its own, named ``<env> @ d=<limit>`` (``inputs.load``): the
verdict, tables and curves are per limit, and the verdict adds one line per swept env on
whether the ranking of the methods holds across its limits.

Partial results: runs that are not ``done`` (running, queued, failed) and done runs with
no final score (``no-score``: no episode finished in the scored epochs, or never evaluated
under ``--final eval``) are excluded from every statistic, counted in the protocol and
listed by name with their status; the curve figures say how many runs they leave out.

Everything is written into a staging directory next to ``--out`` that replaces ``--out``
only once complete, so a reader never sees a half-written report. ``--out`` is only
replaced if it is empty or a previous report (it holds ``.safebench-report``).

The package, in the order data flows through it:

* ``inputs``: :class:`ReportConfig`, loading, and the frozen :class:`ReportInputs` every
  section reads (final scores, which runs are used, which are excluded and why);
* one module per group of sections, each a pure function returning a
  :class:`~safebench.report.model.Section` (text, tables as DataFrames, figures):
  ``verdict``, ``protocol`` (title, protocol, runs per cell, excluded runs), ``aggregate``,
  ``seeds`` ("Enough seeds?": interval width by number of seeds, seeds to separate the
  verdict's closest pairs; also ``safebench plan``),
  ``per_env`` (per-env and feasibility tables), ``comparisons`` (gain, probability of
  improvement), ``evaluations`` (``safebench eval`` results and video links),
  ``crosscheck`` (throughput, reference implementation), ``against`` (``--against OTHER``:
  every shared (algorithm, env) at matched env steps, curves overlaid), ``figures``;
* ``format``: every number and table format (shared with ``safebench reproduce``);
* ``model``: the ``Section`` value and its blocks;
* ``render``: writes the sections' tables, figures and the page; stages and publishes;
* ``build``: :func:`build_report`, which runs them in page order.

Numbers come from ``safebench.analysis`` (rliable IQM and stratified bootstrap); these
modules only choose the inputs, run the functions and format their output.
"""

from safebench.report.build import Report, build_report
from safebench.report.inputs import MARKER, NO_SCORE, ReportConfig

__all__ = ["MARKER", "NO_SCORE", "Report", "ReportConfig", "build_report"]
