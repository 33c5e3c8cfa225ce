"""`leanbert report`: one Markdown report and one self-contained HTML page from the JSON that the
benchmarks (``benchmarks/bench_*.py``) and experiments (``experiments/*/``) write.

The pipeline, one module per stage, data flowing one way:

- :mod:`~leanbert.report.collect`: one collector per input JSON -> a :class:`~leanbert.report.collect.Record`
  (the figures, the setting they were measured with, the paper's number where there is one, and
  whether the input is ok, stale, missing, unreadable, or cannot be told);
- :mod:`~leanbert.report.plots`: one PNG per section (matplotlib, Agg);
- :mod:`~leanbert.report.render`: the sections, ``report.md``, ``report.html`` (images inlined as
  ``data:`` URIs, no external CSS or JS), ``summary.json`` (the headline numbers with their sources)
  and the README's headline table;
- :mod:`~leanbert.report.regenerate`: the commands that (re)produce each input, in full mode and
  at toy scale (``--quick``), with their expected run times.

Nothing is dropped silently: an input that is missing, stale or unreadable is listed in the
report's Inputs table with the reason, and every section says which of its inputs it lacks.
"""
