"""Data-free baselines our maps are compared with (benchmarks/baselines.py)."""
