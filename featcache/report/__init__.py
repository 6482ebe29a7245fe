"""Reports of evaluation results: plain-text tables, PNG plots, HTML.

- :mod:`featcache.report.tables`: ``format_cv``, ``format_comparison``,
  ``format_sweep``, ``format_curve`` (strings the CLI prints), ``pm``, ``render``.
- :mod:`featcache.report.plots`: ``plot_regularisation_path``,
  ``plot_confusion_matrix``, ``plot_learning_curve`` (PNG files).
- :mod:`featcache.report.html`: the self-contained HTML page.
- :mod:`featcache.report.diagnosis`: ``write_diagnosis`` (HTML, PNGs, JSON of a Diagnosis).

Sub-modules are imported explicitly, so reading tables never imports matplotlib.
"""
