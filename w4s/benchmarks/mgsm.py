"""MGSM: 250 GSM8K questions translated into 10 languages plus English (TSV, no header)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import Row, hub_rows, read_rows
from w4s.benchmarks.numeric import NUMBER_ANSWER, NumericBenchmark, gold_number, plain
from w4s.errors import BenchmarkError

LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")


@register("mgsm")
class MGSM(NumericBenchmark):
    """`language` is one code from LANGUAGES or "all"; `path` a file or a folder of mgsm_*.tsv."""

    name = "mgsm"
    title = "MGSM"
    default_file = "mgsm"
    columns = ("question", "answer")
    hub_id = "juletxara/mgsm"
    description = (
        "Solve a grade-school math word problem written in one of 11 languages. "
        + NUMBER_ANSWER
    )

    def __init__(self, *, language: str = "all", **options: Any) -> None:
        if language != "all" and language not in LANGUAGES:
            raise BenchmarkError(
                f"`language` must be 'all' or one of {', '.join(LANGUAGES)}, "
                f"but received {language!r}"
            )
        super().__init__(**options)
        self.language = language

    @property
    def languages(self) -> tuple[str, ...]:
        return LANGUAGES if self.language == "all" else (self.language,)

    def rows(self) -> Iterator[Row]:
        for lang in self.languages:
            if self.hub:
                rows = hub_rows(self.hub_id, config=lang, split="test", revision=self.revision)
            else:
                rows = read_rows(self._file(lang), columns=self.columns)
            for row in rows:
                data = {**row.data, "language": lang, "line": row.number}
                yield Row(row.source, row.number, data)

    def _file(self, lang: str) -> Path:
        root = self.resolve(self.path, self.default_file)
        if root.is_dir() or self.path is None:
            return root / f"mgsm_{lang}.tsv"
        if len(self.languages) > 1:
            raise BenchmarkError(
                f"`path` {str(root)!r} is one file; pass `language=` or a folder of mgsm_*.tsv"
            )
        return root

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        field = "answer_number" if "answer_number" in row else "answer"  # Hub vs TSV
        lang = row["language"]
        return Item(
            id=f"mgsm-{lang}-{row['line']}",
            question=str(row["question"]),
            gold=plain(gold_number(row, field)),
            metadata={"language": lang},
        )
