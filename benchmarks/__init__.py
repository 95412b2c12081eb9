"""Benchmarks of the solo ops (not part of the installed package): ``python benchmarks/run.py --help``."""
