"""``python -m imageclf.cli ...`` (and ``torchrun ... -m imageclf.cli train ...``)."""

from imageclf.cli import entry

entry()
