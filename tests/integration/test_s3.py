"""S3-compatible repositories against moto's real S3 server: the normal cycle and each failure as one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import private_file, run_cli
from tests.integration.offhost_servers import (
    Moto,
    free_port,
    make_tree,
    password_file,
    restore_first_then_prune,
    start_moto,
    user_without_rights,
    write_config,
)


@pytest.fixture(scope="module")
def moto(restic: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto_keys(restic: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server = start_moto(tmp_path_factory.mktemp("moto-keys") / "moto.log", enforce_keys=True)
    yield server
    server.stop()


def _setup(tmp_path: Path, moto: Moto, bucket: str, access_key: str | None = None, secret_key: str | None = None,
           endpoint: str | None = None) -> tuple[Path, Path, list[str]]:
    """Config with one s3 repository (keys by file reference); returns (config, app dir, secrets)."""
    app = tmp_path / "app"
    make_tree(app)
    password = password_file(tmp_path)
    access = private_file(tmp_path / "secrets" / "s3.access", access_key or moto.access_key)
    secret = private_file(tmp_path / "secrets" / "s3.secret", secret_key or moto.secret_key)
    repo = {"url": f"s3:{endpoint or moto.endpoint}/{bucket}/safehold", "password": f"file:{password}",
            "env": {"AWS_ACCESS_KEY_ID": f"file:{access}", "AWS_SECRET_ACCESS_KEY": f"file:{secret}"}}
    config = write_config(tmp_path / "safehold.toml", {"s3": repo},
                          {"app": {"repositories": ["s3"], "files": [str(app)]}})
    return config, app, [password.read_text(), secret.read_text()]


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str, secrets: list[str]) -> None:
    assert result.returncode not in (0, 3), result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not any(s in result.stdout + result.stderr for s in secrets)


def test_s3_backup_list_restore_prune(tmp_path: Path, moto: Moto) -> None:
    config, app, _ = _setup(tmp_path, moto, moto.bucket("cycle-bucket"))
    first = run_cli("backup", "app", "--json", config=config)
    assert first.returncode == 0, first.stderr
    (app / "index.php").write_text("changed")
    assert run_cli("backup", "app", config=config).returncode == 0
    listed = run_cli("list", "app", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2 and "on this host" not in listed.stderr
    restore_first_then_prune(tmp_path, config, app, json.loads(first.stdout)[0]["run_id"])


def test_s3_failures_are_one_clear_line(tmp_path: Path, moto: Moto, moto_keys: Moto) -> None:
    no_rights_key, no_rights_secret = user_without_rights(moto_keys)
    cases = {
        "permission denied": (moto_keys, {"access_key": no_rights_key, "secret_key": no_rights_secret},
                              "access denied"),
        "wrong access key": (moto_keys, {"access_key": "AKIAWRONGWRONGWRONG0"}, "S3 access key rejected"),
        "wrong secret key": (moto_keys, {"secret_key": "wrong-secret-key-value-0123456789"}, "S3 secret key rejected"),
        "missing bucket": (moto, {"bucket": "no-such-bucket"}, "bucket does not exist"),
        "unreachable port": (moto, {"endpoint": f"http://127.0.0.1:{free_port()}"}, "connection refused"),
    }
    buckets = {id(moto): moto.bucket("errors-bucket"), id(moto_keys): moto_keys.bucket("errors-bucket")}
    for label, (server, change, expected) in cases.items():
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        bucket_name = str(change.pop("bucket", buckets[id(server)]))
        config, _, secrets = _setup(folder, server, bucket_name, **change)
        _one_line_error(run_cli("backup", "app", config=config), expected, secrets)
    # restic creates missing buckets on init; safehold must not have done that behind the user's back.
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                      aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    assert "no-such-bucket" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_host_only_repository_is_reported(tmp_path: Path, restic: str) -> None:
    app = tmp_path / "app"
    make_tree(app)
    password = password_file(tmp_path)
    config = write_config(tmp_path / "safehold.toml", {"here": {"url": str(tmp_path / "repo"),
                                                                "password": f"file:{password}"}},
                          {"app": {"repositories": ["here"], "files": [str(app)]}})
    backed_up = run_cli("backup", "app", config=config)
    assert backed_up.returncode == 0 and backed_up.stderr.count("every repository (here) is on this host") == 1
    listed = run_cli("list", "app", config=config)  # said once per backup run, not on every read
    assert listed.returncode == 0 and "on this host" not in listed.stderr
    shutil.rmtree(tmp_path / "repo")


def test_s3_dry_run_names_each_problem_and_creates_nothing(tmp_path: Path, moto: Moto, moto_keys: Moto) -> None:
    import boto3

    ready_folder = tmp_path / "ready"
    ready_folder.mkdir()
    config, _, _ = _setup(ready_folder, moto, moto.bucket("dry-run-bucket"))
    assert run_cli("backup", "app", config=config).returncode == 0
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                      aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)

    def stored() -> dict[str, str]:
        return {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="dry-run-bucket").get("Contents", [])}

    before = stored()
    ready = run_cli("backup", "app", "--dry-run", "--json", config=config)
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout)[0]["repositories"][0]["state"] == "ready"
    assert stored() == before  # not even a lock object came and went

    cases = {
        "wrong access key": (moto_keys, {"access_key": "AKIAWRONGWRONGWRONG0"}, "S3 access key rejected"),
        "wrong secret key": (moto_keys, {"secret_key": "wrong-secret-key-value-0123456789"}, "S3 secret key rejected"),
        "missing bucket": (moto, {"bucket": "no-such-dry-bucket"}, "bucket does not exist"),
    }
    moto_keys.bucket("dry-run-bucket")
    for label, (server, change, expected) in cases.items():
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        config, _, secrets = _setup(folder, server, str(change.pop("bucket", "dry-run-bucket")), **change)
        result = run_cli("backup", "app", "--dry-run", config=config)
        assert result.returncode == 1, result.stdout + result.stderr
        problems = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("problem:")]
        assert len(problems) == 1 and f"repository s3: {expected}" in problems[0], result.stdout
        assert "Traceback" not in result.stderr
        assert not any(s in result.stdout + result.stderr for s in secrets)
    assert "no-such-dry-bucket" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert stored() == before


def test_s3_location_holding_other_objects_is_not_made_a_repository(tmp_path: Path, moto: Moto) -> None:
    # The URL names the bucket while the repository lives at bucket/safehold: restic init would make a
    # second, empty repository beside it (and the dry run called the location "new").
    import boto3

    config, _, secrets = _setup(tmp_path, moto, moto.bucket("occupied-bucket"))
    assert run_cli("backup", "app", config=config).returncode == 0
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                      aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    s3.put_object(Bucket="occupied-bucket", Key="other/notes.txt", Body=b"someone's notes")

    def stored() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="occupied-bucket").get("Contents", []))

    before = stored()
    bucket_url = f"s3:{moto.endpoint}/occupied-bucket"
    config.write_text(config.read_text().replace(f"{bucket_url}/safehold", bucket_url))
    expected = f"is the repository at {bucket_url}/safehold?"
    dry = run_cli("backup", "app", "--dry-run", config=config)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    problems = [line.strip() for line in dry.stdout.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and "occupied-bucket holds" in problems[0] and expected in problems[0], dry.stdout
    _one_line_error(run_cli("backup", "app", config=config), expected, secrets)

    config.write_text(config.read_text().replace(bucket_url, f"{bucket_url}/other"))
    _one_line_error(run_cli("backup", "app", config=config),
                    "occupied-bucket holds 1 object(s) under other/ (notes.txt) but no restic repository", secrets)
    assert stored() == before  # nothing was created beside the foreign objects
