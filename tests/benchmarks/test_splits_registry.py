from __future__ import annotations

import pytest

from w4s.benchmarks import benchmark_names, get_benchmark, get_benchmarks
from w4s.benchmarks.base import Item, split_items
from w4s.errors import BenchmarkError

PAPER_NAMES = {
    "aime", "drop", "gpqa", "gsm8k", "gsm_hard", "gsm_plus", "humaneval", "math", "math500",
    "mbpp", "mgsm", "mmlu_pro", "svamp",
}


def items(n: int) -> list[Item]:
    return [Item(f"i{k}", f"q{k}", k) for k in range(n)]


def test_split_is_seeded_reproducible_and_disjoint():
    a = split_items(items(100), seed=3, val_size=20, test_size=50)
    b = split_items(items(100), seed=3, val_size=20, test_size=50)
    c = split_items(items(100), seed=4, val_size=20, test_size=50)
    assert [i.id for i in a.validation] == [i.id for i in b.validation]
    assert [i.id for i in a.validation] != [i.id for i in c.validation]
    assert len(a.validation) == 20 and len(a.test) == 50
    assert not {i.id for i in a.validation} & {i.id for i in a.test}


def test_split_rejects_bad_sizes():
    with pytest.raises(BenchmarkError, match="val_size"):
        split_items(items(5), seed=0, val_size=5)
    with pytest.raises(BenchmarkError, match="test_size"):
        split_items(items(5), seed=0, val_size=2, test_size=0)


def test_default_val_sizes_follow_the_paper():
    assert get_benchmark("humaneval").default_val_size == 33
    assert get_benchmark("mbpp", path="x.jsonl").default_val_size == 86
    assert get_benchmark("gsm_hard", path="x.jsonl").default_val_size == 128
    split = get_benchmark("humaneval").split(seed=0)
    assert (len(split.validation), len(split.test)) == (33, 131)


def test_every_paper_benchmark_is_registered_with_description_and_seeds():
    assert PAPER_NAMES <= set(benchmark_names())
    for name in PAPER_NAMES:
        bench = get_benchmark(name)
        assert bench.name == name and bench.display_name and not bench.synthetic
        assert "answer" in bench.description.lower()
        assert bench.kind in {"math", "code", "qa", "choice"}
        seeds = bench.seed_workflows()
        assert seeds and all("def solver(agent, task: str) -> dict:" in s for s in seeds.values())
    assert get_benchmark("arithmetic").display_name.endswith("(synthetic)")


def test_seed_names_per_kind():
    assert set(get_benchmark("gsm8k").seed_workflows()) == {"cot", "cot_sc", "code"}
    assert set(get_benchmark("mbpp").seed_workflows()) == {"generate", "generate_repair"}
    assert set(get_benchmark("mmlu_pro").seed_workflows()) == {"cot", "cot_sc"}
    assert set(get_benchmark("drop").seed_workflows()) == {"cot"}


def test_unknown_name_and_option_are_one_line_errors():
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm9k'") as e:
        get_benchmark("gsm9k")
    assert "\n" not in str(e.value)
    with pytest.raises(BenchmarkError, match="`gsm8k`"):
        get_benchmark("gsm8k", colour="red")


def test_get_benchmarks_for_transfer():
    benches = get_benchmarks(["gsm8k", "gsm_hard", "arithmetic"])
    assert [b.name for b in benches] == ["gsm8k", "gsm_hard", "arithmetic"]


def test_score_many_default_checks_lengths():
    bench = get_benchmark("arithmetic", size=3)
    batch = bench.load()
    assert bench.score_many(batch, [i.gold for i in batch]) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="answers"):
        bench.score_many(batch, [1])


def _intra_package_imports(path) -> set[str]:
    """Modules of `w4s.benchmarks` a module imports, at top level or lazily in a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[2] for n in names
                  if n.startswith("w4s.benchmarks.") and n.count(".") >= 2}
    return found


def test_benchmark_modules_import_no_cycle():
    from pathlib import Path

    import w4s.benchmarks

    folder = Path(w4s.benchmarks.__file__).parent
    graph = {p.stem: _intra_package_imports(p) for p in folder.glob("*.py")
             if p.stem != "__init__"}
    graph = {mod: {d for d in deps if d in graph} for mod, deps in graph.items()}
    assert graph["base"] == set()  # the protocol module names no family, custom.py included

    def visit(mod, path):
        assert mod not in path, f"import cycle: {' -> '.join([*path, mod])}"
        for dep in graph[mod]:
            visit(dep, [*path, mod])

    for mod in graph:
        visit(mod, [])


def test_base_imports_alone_and_file_prefix_registers_itself():
    import subprocess
    import sys

    code = ("import sys, w4s.benchmarks.base as b; "
            "assert 'w4s.benchmarks.custom' in sys.modules; "  # via the package __init__
            "assert 'file:' in b.benchmark_prefixes(); "
            "assert not hasattr(b, 'CustomBenchmark') and 'custom' not in vars(b)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_registered_prefix_routes_names_to_its_handler(monkeypatch):
    from w4s.benchmarks import base

    monkeypatch.setitem(base._PREFIXES, "tiny:", lambda rest, **kw: base_bench(rest, **kw))

    def base_bench(rest, size=2):
        return get_benchmark("arithmetic", size=int(rest) if rest else size)

    assert len(get_benchmark("tiny:5").load()) == 5
    with pytest.raises(BenchmarkError, match=r"or file:PATH, or tiny:PATH"):
        get_benchmark("nope")
