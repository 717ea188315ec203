"""Benchmark suites run by tools/benchmark.py (not part of the installed library)."""
