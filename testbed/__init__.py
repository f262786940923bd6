"""The backdoor test bed: planting triggers and training model populations.

Used by the scripts that make the shipped models and the backdoor populations, by the benchmarks
and by the tests; not part of the installed package (users scan models, they do not plant
backdoors). Importable from the repository root: pytest puts it on the path, and the scripts and
benchmarks add the root themselves.
"""
