"""Speed benchmarks: imageclf side by side with the seeds' Keras pipeline and a plain-PyTorch ceiling.

``python -m bench`` prepares each workload's data folder (outside the repository), then
runs, one after the other in the same run: the whole ``imageclf train`` command, a fresh
process predicting the test folder, the Keras peer (``keras_seed.py``) and the ceiling
probe (``cpu_ceiling.py``). It writes a JSON record to ``bench/results/`` and appends a
table to the ``## Speed`` section of ``BENCHMARKS.md``. See docs/performance.md.
"""
