"""Every `docs/dataplane.md: <section>` the code cites names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"dataplane\.md\)?: ([A-Za-z][\w -]*?)(?=[).,;:]|$)", re.MULTILINE)


def sections() -> set[str]:
    text = (REPO / "docs" / "dataplane.md").read_text()
    return {line[3:].strip().lower() for line in text.splitlines() if line.startswith("## ")}


def test_every_dataplane_citation_names_a_section() -> None:
    known = sections()
    cited: dict[str, list[str]] = {}
    for top in ("wyvern", "tests", "benchmarks", "scripts", "docs"):
        for path in (REPO / top).rglob("*"):
            if path.suffix not in (".py", ".md", "") or not path.is_file():
                continue
            for name in CITATION.findall(path.read_text(errors="replace")):
                cited.setdefault(name.lower(), []).append(str(path.relative_to(REPO)))
    assert len(cited) >= 6, cited  # the code does cite it
    unknown = {name: where for name, where in cited.items() if name not in known}
    assert unknown == {}, f"no such section in docs/dataplane.md: {unknown}"


def test_nothing_cites_the_old_traps() -> None:
    pattern = re.compile(r"DATAPLANE|\btraps? \d")
    hits = [
        str(path.relative_to(REPO))
        for top in ("wyvern", "benchmarks", "scripts", "docs")
        for path in (REPO / top).rglob("*.*")
        if path.suffix in (".py", ".md") and pattern.search(path.read_text(errors="replace"))
    ]
    assert hits == []
