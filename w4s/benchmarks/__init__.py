"""Benchmarks: loaders, scorers, seed workflows. Importing this registers every family."""

from w4s.benchmarks import (  # noqa: F401  (each module registers its benchmarks)
    aime,
    arithmetic,
    drop,
    gpqa,
    gsm8k,
    gsm_hard,
    gsm_plus,
    humaneval,
    math,
    mbpp,
    mgsm,
    mmlu_pro,
    svamp,
)
from w4s.benchmarks.base import (
    Benchmark,
    Item,
    Split,
    benchmark_names,
    get_benchmark,
    get_benchmarks,
    pick_example,
    split_items,
)
from w4s.benchmarks.custom import CustomBenchmark, benchmark_options_from_cli
from w4s.benchmarks.loading import DATA_DIR_ENV, data_dir

__all__ = [
    "DATA_DIR_ENV",
    "Benchmark",
    "CustomBenchmark",
    "Item",
    "Split",
    "benchmark_names",
    "benchmark_options_from_cli",
    "data_dir",
    "get_benchmark",
    "get_benchmarks",
    "pick_example",
    "split_items",
]
