"""The sample config, `safehold init` and docs/config.md come from the models' descriptions: one source.

`init` writes exactly what the generator makes; every key of every model is in it with its description;
a key added to a model (in a copy of the source) shows up without touching anything else; every default
and example validates; docs/config.md is what the generator writes today.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from safehold import config as config_module
from safehold.actions import init
from safehold.actions.init import write_example
from safehold.config import Config, InstanceConfig
from safehold.config.fields import keys, table_of
from safehold.config.sample import reference, sample
from safehold.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
HEADER = re.compile(r"^(?:# )?\[\[?([^\]]+)\]\]?$")
KEY = re.compile(r"^(?:# )?([A-Za-z0-9_]+) = ")


def itflow_root(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.php").write_text("<?php\n$dbhost = 'localhost';\n$database = 'itflow';\n")
    return folder


def test_init_writes_exactly_the_generated_sample(tmp_path: Path) -> None:
    root, repo, out = itflow_root(tmp_path / "itflow"), str(tmp_path / "repo"), tmp_path / "etc" / "safehold.toml"
    out.parent.mkdir()
    write_example(out, "itflow", root, repo, False)
    values = {"settings": {}, "repositories": {"main": {"url": repo, "password": f"file:{out.parent}/repo.pass"}},
              "instances": {"itflow": {"app": "itflow", "root": str(root), "repositories": ["main"],
                                       "retention": {"last": 14}}}}
    notes = {"repositories.main.password": init.PASSWORD_NOTE, "instances.itflow.databases": init.APP_DATABASES}
    assert out.read_text() == sample(values, notes)


def _tables(model: type[BaseModel], path: str, names: dict[str, str]) -> list[tuple[str, type[BaseModel]]]:
    """Every table below `model` as the sample names it (a dict of tables under the name in `names`)."""
    found = []
    for name, field in keys(model).items():
        if (table := table_of(field)) is not None:
            form, sub = table
            below = f"{path}.{name}".lstrip(".") + (f".{names[name]}" if form == "named" else "")
            found += [(below, sub), *_tables(sub, below, names)]
    return found


def _keys_by_table(text: str) -> set[tuple[str, str]]:
    """(table, key) for every key line of a sample, set or commented out."""
    table, found = "", set()
    for line in text.splitlines():
        if header := HEADER.match(line):
            table = header[1]
        elif key := KEY.match(line):
            found.add((table, key[1]))
    return found


def _comments(text: str) -> str:
    return " ".join(line.removeprefix("# ") for line in text.splitlines() if line.startswith("#"))


@pytest.mark.parametrize("app", ["itflow", "generic"])
def test_every_key_of_every_model_is_in_the_sample_init_writes(tmp_path: Path, app: str) -> None:
    out = tmp_path / "safehold.toml"
    write_example(out, app, itflow_root(tmp_path / "itflow") if app == "itflow" else None, None, False)
    text = out.read_text()
    present, comments = _keys_by_table(text), _comments(text)
    tables = _tables(Config, "", {"repositories": "main", "instances": "itflow" if app == "itflow" else "myapp"})
    assert len(tables) >= 12
    for table, model in tables:
        for name, field in keys(model).items():
            if table_of(field) is None:
                assert (table, name) in present, f"{table}.{name} is not in the sample"
                assert field.description and field.description in comments, f"{table}.{name}: description missing"


def test_a_key_added_to_a_model_appears_in_init_and_the_reference(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "safehold"
    shutil.copytree(ROOT / "src" / "safehold", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for module, model, line in [
        ("web.py", "Settings", 'probe_seconds: int = Field(default=7, description="a key the test added to Settings")'),
        ("database.py", "DatabaseConfig", 'probe_lanes: int | None = Field(default=None, description="a key the '
                                          'test added to a database", examples=[3])'),
    ]:
        path = copy / "config" / module
        text = path.read_text()
        declared = text.index(f"class {model}(Model):")
        after_docstring = text.index('"""\n\n', text.index('"""', declared) + 3) + 5  # the model's first field
        path.write_text(f"{text[:after_docstring]}    {line}\n{text[after_docstring:]}")
    out = tmp_path / "safehold.toml"
    script = ("import sys, safehold\nfrom pathlib import Path\nfrom safehold.actions.init import write_example\n"
              "from safehold.config.sample import reference\nassert safehold.__file__.startswith(sys.argv[1])\n"
              "write_example(Path(sys.argv[2]), None, None, None, False)\nprint(reference())\n")
    run = subprocess.run([sys.executable, "-c", script, str(copy), str(out)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(copy.parent), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "# a key the test added to Settings\n# probe_seconds = 7\n" in text
    assert "# a key the test added to a database\n# probe_lanes = 3\n" in text
    assert text.index("probe_lanes") > text.index("# [[instances.myapp.databases]]")
    assert "| `probe_seconds` | integer | `7` | a key the test added to Settings. |" in run.stdout
    assert "probe" not in sample() and "probe" not in reference()  # the real models are untouched


def test_init_knows_every_app_the_config_allows() -> None:
    assert list(init.LABELS) == list(get_args(InstanceConfig.model_fields["app"].annotation))


def test_every_default_and_example_is_valid() -> None:
    config = config_module.parse(sample(fill=True), Path("filled.toml"))
    assert config.instances["myapp"].databases[0].names == ["app"] and config.notify.itop is not None


def test_the_generic_sample_says_what_to_set_and_its_database_example_loads(tmp_path: Path) -> None:
    out = tmp_path / "safehold.toml"
    write_example(out, "generic", None, None, False)
    with pytest.raises(ConfigError, match="a generic instance needs at least one of databases, files"):
        config_module.load(out)
    text = out.read_text()
    assert "set files or config_files" in _comments(text)
    lines = text.splitlines()
    start = lines.index("# [[instances.myapp.databases]]")
    end = lines.index("", start)
    for n in range(start, end):
        if HEADER.match(lines[n]) or KEY.match(lines[n]):
            lines[n] = lines[n].removeprefix("# ")
    out.write_text("\n".join(lines) + "\n")
    database = config_module.load(out).instance("myapp").databases[0]
    assert (database.engine, database.names, database.user) == ("mariadb", ["app"], "backup")


def test_a_wrong_value_is_explained_by_its_description(tmp_path: Path) -> None:
    base = '[repositories.main]\nurl = "/srv/repo"\npassword = "env:X"\n[instances.app]\nrepositories = ["main"]\n' \
           'files = ["/srv/app"]\n'
    with pytest.raises(ConfigError) as bad:
        config_module.parse(base + "[instances.app.retention]\ndaily = -1\n", Path("x.toml"))
    assert bad.value.message.startswith("x.toml: instances.app.retention.daily: ")
    assert bad.value.hint == "daily: keep the newest point of this many days"
    with pytest.raises(ConfigError) as unknown:
        config_module.parse(base + "[settings]\nstate_folder = \"/var/lib/x\"\n", Path("x.toml"))
    assert "unknown key" in unknown.value.message and "state_dir, lock_wait_seconds" in unknown.value.hint


def test_docs_config_md_is_what_the_generator_writes() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == reference(), (
        "docs/config.md is stale: regenerate it with `PYTHONPATH=src python3 -m safehold.config.sample > "
        "docs/config.md`")
