"""Backdoor signature identification: per-class statistics, trigger recovery, the scan."""
