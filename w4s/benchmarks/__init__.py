"""Benchmarks: loaders, scorers, seed workflows. Importing this registers every family."""

from w4s.benchmarks import arithmetic  # noqa: F401  (registers)
from w4s.benchmarks.base import Benchmark, Item, Split, benchmark_names, get_benchmark, split_items

__all__ = ["Benchmark", "Item", "Split", "benchmark_names", "get_benchmark", "split_items"]
