"""Reports: the evaluation report's figures (:mod:`.figures`), their statistics (:mod:`.stats`),
drawings (:mod:`.plots`) and self-contained HTML pages (:mod:`.html`, :mod:`.inspection_html`)."""

# Bootstrap resamples behind every 95% interval of a report. Here, not in figures.py, because
# this package is torch-free: ``imageclf evaluate --help`` shows it without loading torch.
DEFAULT_BOOTSTRAP = 1000
