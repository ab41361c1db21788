"""Names and defaults of the evaluation that the command line shows in ``--help``.

Kept free of numpy and torch (a module of its own for that reason), so that ``imageclf
evaluate --help`` and ``imageclf review --help`` answer in a blink.
"""

from __future__ import annotations

# Bootstrap resamples behind every 95% interval of a report.
DEFAULT_BOOTSTRAP = 1000
# Label-quality scores imageclf review ranks by (evaluation/label_issues.py computes them).
RANKINGS = ("self_confidence", "normalized_margin")
