"""Each family loads from a tiny file in its native format; bad files fail in one line."""

from __future__ import annotations

import gzip
import json

import pytest

from w4s.benchmarks import get_benchmark
from w4s.benchmarks.loading import read_rows
from w4s.errors import BenchmarkError


def test_gsm8k(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "answer": "work\n#### 1,234"}])
    (item,) = get_benchmark("gsm8k", path=path).load()
    assert (item.question, item.gold) == ("Q?", 1234)


def test_gsm_hard_gsm_plus_aime(tmp_path, write_jsonl):
    hard = write_jsonl(tmp_path / "h.jsonl", [{"input": "Q", "code": "", "target": 2.5}])
    assert get_benchmark("gsm_hard", path=hard).load()[0].gold == 2.5
    plus = write_jsonl(
        tmp_path / "p.jsonl.gz",
        [{"question": "Q1", "answer": "4.33"}, {"question": "Q2", "answer": "None"}],
        gz=True,
    )
    golds = [i.gold for i in get_benchmark("gsm_plus", path=plus).load()]
    assert golds == [4.33, "None"]
    aime = write_jsonl(tmp_path / "a.jsonl", [{"id": 60, "problem": "P", "answer": "025"}])
    item = get_benchmark("aime", path=aime).load()[0]
    assert (item.id, item.gold) == ("aime-60", 25)


def test_svamp_json_array(tmp_path):
    row = {"ID": "chal-1", "Body": "Tom has 3.", "Question": "How many?", "Answer": 3.0}
    (tmp_path / "s.json").write_text(json.dumps([row]))
    item = get_benchmark("svamp", path=tmp_path / "s.json").load()[0]
    assert (item.id, item.question, item.gold) == ("chal-1", "Tom has 3. How many?", 3)


def test_mgsm_tsv_folder_and_single_language(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / f"mgsm_{lang}.tsv").write_text(f"Question {lang}?\t18\nSecond\t1,000\n")
    one = get_benchmark("mgsm", path=tmp_path, language="de").load()
    assert [(i.id, i.gold) for i in one] == [("mgsm-de-1", 18), ("mgsm-de-2", 1000)]
    file_only = get_benchmark("mgsm", path=tmp_path / "mgsm_en.tsv", language="en").load()
    assert file_only[0].metadata == {"language": "en"}
    with pytest.raises(BenchmarkError, match="mgsm_bn.tsv"):
        get_benchmark("mgsm", path=tmp_path).load()  # "all" needs every language file
    with pytest.raises(BenchmarkError, match="`language`"):
        get_benchmark("mgsm", language="xx")


def test_math_gold_from_answer_or_boxed_solution(tmp_path, write_jsonl):
    m500 = write_jsonl(
        tmp_path / "m5.jsonl",
        [{"problem": "P", "solution": "s", "answer": "\\frac{1}{2}", "unique_id": "t/1.json"}],
    )
    assert get_benchmark("math500", path=m500).load()[0].gold == "\\frac{1}{2}"
    full = write_jsonl(
        tmp_path / "m.jsonl", [{"problem": "P", "solution": "so \\boxed{\\sqrt{2}}.", "idx": 4}]
    )
    item = get_benchmark("math", path=full).load()[0]
    assert (item.id, item.gold) == ("math-4", "\\sqrt{2}")


def test_drop_and_mmlu_pro(tmp_path, write_jsonl):
    row = {"context": "Passage... Answer:", "completion": "x", "ref_text": "a|b"}
    drop = write_jsonl(tmp_path / "d.jsonl", [row])
    assert get_benchmark("drop", path=drop).load()[0].gold == ["a", "b"]
    row = {"question_id": 3, "question": "Q?", "options": ["x", "y", "z"], "answer": "B"}
    item = get_benchmark("mmlu_pro", path=write_jsonl(tmp_path / "m.jsonl", [row])).load()[0]
    assert item.gold == "B" and "(B) y" in item.question


def test_gpqa_csv_shuffles_options_reproducibly(tmp_path):
    header = "Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,"
    header += "Incorrect Answer 3\n"
    rows = "".join(f"rec{i},Q{i}?,right,w1,w2,w3\n" for i in range(20))
    (tmp_path / "gpqa.csv").write_text(header + rows)
    items = get_benchmark("gpqa", path=tmp_path / "gpqa.csv").load()
    again = get_benchmark("gpqa", path=tmp_path / "gpqa.csv").load()
    assert [i.gold for i in items] == [i.gold for i in again]
    assert len({i.gold for i in items}) > 1  # the correct option is not always (A)
    for item in items:
        assert item.metadata["options"]["ABCD".index(item.gold)] == "right"


def test_humaneval_and_mbpp_files(tmp_path, write_jsonl, he_row, mbpp_row):
    item = get_benchmark("humaneval", path=write_jsonl(tmp_path / "h.jsonl", [he_row])).load()[0]
    assert item.metadata["public_tests"] == ["assert add(1, 2) == 3"]
    item = get_benchmark("mbpp", path=write_jsonl(tmp_path / "m.jsonl", [mbpp_row])).load()[0]
    assert item.question.endswith("assert add(1, 2) == 3")
    assert item.metadata["signature"] == "def add(a, b):"
    original = {k: mbpp_row[k] for k in ("task_id", "code", "test_list", "test_imports")}
    original["prompt"] = "Write a function to add two numbers."
    item = get_benchmark("mbpp", path=write_jsonl(tmp_path / "o.jsonl", [original])).load()[0]
    assert item.metadata["entry_point"] == "add" and "def check" in item.metadata["test"]


def test_humaneval_default_loads_offline_from_the_package():
    items = get_benchmark("humaneval").load()
    assert len(items) == 164 and items[0].id == "HumanEval/0"


def test_parquet_and_gzip_tsv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"question": "Q", "answer": "#### 5"}])
    pq.write_table(table, tmp_path / "g.parquet")
    assert get_benchmark("gsm8k", path=tmp_path / "g.parquet").load()[0].gold == 5
    (tmp_path / "mgsm_en.tsv.gz").write_bytes(gzip.compress(b"Q?\t7\n"))
    rows = read_rows(tmp_path / "mgsm_en.tsv.gz", columns=("question", "answer"))
    assert rows[0].data == {"question": "Q?", "answer": "7"}


def test_unicode_line_separators_inside_strings_do_not_split_rows(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "a\u0085b", "answer": "#### 1"}, ensure_ascii=False))
    assert get_benchmark("gsm8k", path=path).load()[0].question == "a\u0085b"


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(BenchmarkError) as e:
        get_benchmark("gsm8k", path=tmp_path / "nope.jsonl").load()
    assert "nope.jsonl" in one_line(e) and "not found" in one_line(e)


def test_missing_field_names_file_row_and_field(tmp_path, write_jsonl):
    rows = [{"question": "Q", "answer": "#### 1"}, {"q": "Q", "answer": "#### 2"}]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(BenchmarkError) as e:
        get_benchmark("gsm8k", path=path).load()
    message = one_line(e)
    assert "g.jsonl" in message and "row 2" in message and "'question'" in message


def test_bad_value_names_the_field(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q", "answer": "no final line"}])
    with pytest.raises(BenchmarkError) as e:
        get_benchmark("gsm8k", path=path).load()
    assert "g.jsonl" in one_line(e) and "'answer'" in one_line(e)


def test_bad_json_and_unknown_suffix(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"question": "Q", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(BenchmarkError, match="line 2"):
        get_benchmark("gsm8k", path=tmp_path / "g.jsonl").load()
    (tmp_path / "g.txt").write_text("x")
    with pytest.raises(BenchmarkError, match="unknown file type"):
        get_benchmark("gsm8k", path=tmp_path / "g.txt").load()


def test_default_path_comes_from_the_data_dir(tmp_path, monkeypatch, write_jsonl):
    monkeypatch.delenv("W4S_DATA_DIR", raising=False)
    with pytest.raises(BenchmarkError) as e:
        get_benchmark("gsm8k").load()
    assert "path=" in one_line(e) and "W4S_DATA_DIR" in one_line(e)
    write_jsonl(tmp_path / "gsm8k_test.jsonl", [{"question": "Q", "answer": "#### 3"}])
    monkeypatch.setenv("W4S_DATA_DIR", str(tmp_path))
    assert get_benchmark("gsm8k").load()[0].gold == 3


def test_hub_needs_a_revision_and_the_datasets_extra(monkeypatch):
    import builtins

    with pytest.raises(BenchmarkError, match="`revision` is required"):
        get_benchmark("gsm8k", hub=True).load()
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(BenchmarkError) as e:
        get_benchmark("gsm8k", hub=True, revision="main").load()
    assert "w4s[hub]" in one_line(e)
    with pytest.raises(BenchmarkError, match="no Hub source"):
        get_benchmark("drop", hub=True, revision="main").load()
