"""Every ```toml block in README.md and docs/*.md passes safehold's config validation, so docs cannot drift.

Snippets are often fragments (one `[instances.itflow]` showing a schedule, a repository without an
instance): what a fragment leaves out is filled in with neutral values before validating; whatever
the snippet says itself must be valid as written.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from safehold.config import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```toml[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    """(file:line, TOML text) of every fenced toml block, its indentation removed."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            indent = len(match["indent"])
            body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", body))
    return found


def completed(data: dict[str, Any]) -> dict[str, Any]:
    """A fragment made whole: instances get a repository and something to back up, named
    repositories exist. Nothing the snippet sets is changed."""
    repositories = data.setdefault("repositories", {})
    for instance in data.get("instances", {}).values():
        names = instance.setdefault("repositories", [next(iter(repositories), "main")])
        for name in names:
            repositories.setdefault(name, {"url": f"/srv/safehold/{name}", "password": "env:REPO_PASS"})
        if instance.get("app", "generic") != "generic":
            instance.setdefault("root", "/srv/app")
        elif not any(instance.get(key) for key in ("databases", "files", "config_files")):
            instance["files"] = ["/srv/app"]
    return data


SNIPPETS = snippets()


def test_docs_have_toml_snippets() -> None:
    assert len(SNIPPETS) >= 8, "the fence pattern no longer finds the docs' ```toml blocks"


@pytest.mark.parametrize(("where", "text"), SNIPPETS, ids=[where for where, _ in SNIPPETS])
def test_doc_snippet_is_a_valid_config(where: str, text: str) -> None:
    data = tomllib.loads(text)  # a syntax error fails here, naming the line
    try:
        Config.model_validate(completed(data))
    except ValidationError as exc:
        pytest.fail(f"{where}: the ```toml block does not load:\n{exc}")
