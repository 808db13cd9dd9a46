"""What a report page holds: sections of charts and tables, each keeping its records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from civiclake.report.charts import Chart


@dataclass
class TableBlock:
    """A small HTML table (a summary, the snapshot history)."""

    key: str
    title: str
    records: list[dict[str, Any]]
    note: str = ""


@dataclass
class Section:
    title: str
    items: list[Chart | TableBlock] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Page:
    identifier: str
    kind: str  # "bnt", "tlc", "profile"
    rows: int
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    since: str | None = None

    @property
    def charts(self) -> dict[str, Chart]:
        return {i.key: i for s in self.sections for i in s.items if isinstance(i, Chart)}

    @property
    def tables(self) -> dict[str, TableBlock]:
        return {i.key: i for s in self.sections for i in s.items if isinstance(i, TableBlock)}

    @property
    def file_name(self) -> str:
        return f"{self.identifier}.html"
