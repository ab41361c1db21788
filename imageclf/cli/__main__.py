"""``python -m imageclf.cli ...`` (and ``torchrun ... -m imageclf.cli train ...``)."""

from . import main

main()
