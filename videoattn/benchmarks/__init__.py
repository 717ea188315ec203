"""Benchmark suites run by tools/benchmark.py; each prints a table with ratios to baselines."""
