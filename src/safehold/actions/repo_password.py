"""`safehold repo passwd NAME`: change a repository's password when someone who knew it leaves.

restic keeps several keys (passwords) per repository, so the change never has a moment where no
password opens it: a key for the new password is added and proven first, the new password is
stored where the config reads it, and only then are the other keys removed. Killed at any point,
the repository still opens with the password the config references at that moment.

A password the config reads from a file is rewritten in that file (a 0600 copy of the old one
stays beside it until the old keys are gone). One read from the environment cannot be changed by
safehold: the new key is added, the change is recorded as pending, and `--remove-old-keys`
finishes it once the environment holds the new password.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.text import Text

from safehold.actions.common import open_repository, repository_locks
from safehold.actions.kit import written_kits
from safehold.config import Config
from safehold.errors import ConfigError, RepositoryError, SafeholdError
from safehold.output import Reporter
from safehold.repository.restic import Repository
from safehold.secrets import Secret, resolve, write_private

# 32 random bytes as URL-safe text: no quoting trouble in a file or an environment variable.
GENERATED_BYTES = 32
# Beside the password file while old keys still exist: the old password, should a person need it back.
BACKUP_SUFFIX = ".old"


def _reference_key(reference: str) -> tuple[str, str]:
    """What a secret reference points at: a file by its real path, a variable by its name."""
    kind, _, where = reference.partition(":")
    return kind, str(Path(where).expanduser().resolve()) if kind == "file" else where


def sharing(config: Config, name: str) -> list[str]:
    """Other repositories whose password comes from the same file or variable as `name`'s.

    Changing that password for one repository would lock the others out of theirs.
    """
    mine = _reference_key(config.repositories[name].password)
    return sorted(other for other, repo in config.repositories.items()
                  if other != name and _reference_key(repo.password) == mine)


def same_key(a: str, b: str) -> bool:
    """Whether two key ids name one key (restic 0.14 lists short ids, newer versions full ones)."""
    return bool(a) and bool(b) and (a.startswith(b) or b.startswith(a))


def current_key(keys: list[dict[str, Any]]) -> str:
    """The id of the key the password in use opened."""
    for key in keys:
        if key.get("current"):
            return str(key["id"])
    raise RepositoryError("restic named no current key", "check `restic key list` by hand")


def backup_path(password_file: Path) -> Path:
    """Where the old password file is kept until the old keys are removed."""
    return password_file.with_name(password_file.name + BACKUP_SUFFIX)


def _pending_file(config: Config, name: str) -> Path:
    # Beside the repository's other state; holds a key id and a place, never a password.
    return config.state_dir / "repositories" / f"{name}.passwd.json"


def _read_pending(config: Config, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_pending_file(config, name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") else None


def _checked(config: Config, name: str) -> str:
    """The repository's password reference, once the repository may have its password changed alone."""
    if name not in config.repositories:
        raise ConfigError(f"no repository {name!r} in {config.source}",
                          f"known repositories: {', '.join(sorted(config.repositories)) or 'none'}")
    if others := sharing(config, name):
        reference = config.repositories[name].password
        raise ConfigError(f"repositories {name} and {', '.join(others)} read their password from the same place "
                          f"({reference}): changing it for {name} would lock the others out",
                          f"give {name} a password file of its own (a copy, mode 0600), point its `password` at "
                          "it, then run this again")
    return config.repositories[name].password


def _new_password(reference: str | None) -> tuple[Secret, str]:
    """The new password and where it lives: read from `reference`, or generated (into `reference`'s
    file when it names one that does not exist yet)."""
    if reference is not None and not reference.startswith("file:"):
        return _usable(resolve(reference, "--new-password-ref")), reference
    generated = Secret(secrets.token_urlsafe(GENERATED_BYTES), "generated")
    if reference is None:
        return generated, ""
    path = Path(reference[5:]).expanduser().absolute()
    if path.exists():
        return _usable(resolve(reference, "--new-password-ref")), f"file:{path}"
    write_private(path, generated.reveal() + "\n")
    return generated, f"file:{path}"


def _usable(new: Secret) -> Secret:
    """`new`, unless restic would read it as empty: it trims spaces, adds a key for the empty password and
    then refuses to open with it, so the change would stop with that key left in the repository."""
    if not new.reveal().strip():
        raise ConfigError(f"the new password in {new.reference} is empty or only spaces",
                          "put the new password there, or drop --new-password-ref to have one generated; "
                          "nothing was changed")
    return new


def _add_key(config: Config, repo: Repository, new: Secret, location: str, reporter: Reporter) -> str:
    """Add and prove a key for `new`; record the change as pending; return the new key's id."""
    reporter.step(f"{repo.name}: adding a key for the new password")
    repo.add_key(new)
    reporter.step(f"{repo.name}: opening it with the new password")
    key = current_key(replace(repo, password=new).keys())
    write_private(_pending_file(config, repo.name), json.dumps(
        {"key": key, "new_password": location, "since": datetime.now(UTC).isoformat()}) + "\n")
    return key


def _store(password_file: Path, new: Secret, reporter: Reporter) -> None:
    """Write `new` into the config's password file, keeping a 0600 copy of the old one beside it."""
    reporter.step(f"storing the new password in {password_file} (the old one stays in "
                  f"{backup_path(password_file)} until the old keys are removed)")
    write_private(backup_path(password_file), password_file.read_bytes())
    write_private(password_file, new.reveal() + "\n")


def _prove_refused(repo: Repository, old: Secret) -> None:
    """Raise unless restic turns the old password away as wrong."""
    try:
        replace(repo, password=old).run("cat", "config")
    except RepositoryError as exc:
        if exc.message.startswith("wrong password"):
            return
        raise
    raise RepositoryError(f"repository {repo.name}: the old password still opens it although its keys were removed",
                          "list the keys with `restic key list` and remove the old ones by hand")


def _remove_old_keys(config: Config, repo: Repository, pending: dict[str, Any], old: Secret | None,
                     reporter: Reporter) -> list[str]:
    """Remove every key but the pending new one, which the configured password must open; returns their ids."""
    keys = repo.keys()
    current = current_key(keys)
    if not same_key(current, str(pending["key"])):
        reference = config.repositories[repo.name].password
        raise SafeholdError(f"the configured password of {repo.name} ({reference}) still opens key {current[:8]}, "
                            f"not the new key {str(pending['key'])[:8]}: no key was removed",
                            f"put the new password ({pending.get('new_password') or 'see the earlier output'}) "
                            f"where {reference} reads it, then run this again; or start over with "
                            f"`safehold repo passwd {repo.name}`")
    removed = [str(key["id"]) for key in keys if not key.get("current")]
    for key_id in removed:
        reporter.step(f"{repo.name}: removing old key {key_id[:8]}")
        repo.remove_key(key_id)
    left = repo.keys()
    if len(left) != 1:
        raise RepositoryError(f"repository {repo.name} still has {len(left)} keys after removing the old ones",
                              "list them with `restic key list` and remove the old ones by hand")
    if old is not None:
        reporter.step(f"{repo.name}: checking that the old password no longer opens it")
        _prove_refused(repo, old)
    return removed


def _finish(config: Config, name: str, old: Secret | None, reporter: Reporter) -> dict[str, Any]:
    """Remove the old keys of a pending change, with the password the config references now."""
    pending = _read_pending(config, name)
    if pending is None:
        raise SafeholdError(f"no password change of repository {name} is pending",
                            f"change it with `safehold repo passwd {name}`")
    removed = _remove_old_keys(config, open_repository(config, name), pending, old, reporter)
    reference = config.repositories[name].password
    if reference.startswith("file:"):
        backup_path(Path(reference[5:]).expanduser().resolve()).unlink(missing_ok=True)
    _pending_file(config, name).unlink(missing_ok=True)
    return {"repository": name, "done": True, "password": reference, "key": pending["key"],
            "keys_removed": removed, "old_password_refused": old is not None, "next_steps": [],
            "stale_kits": stale_kits(config, str(pending.get("since", "")))}


def stale_kits(config: Config, since: str) -> list[str]:
    """Kit files written before the change began (`since`, ISO time): they hold the old password."""
    try:
        start = datetime.fromisoformat(since).timestamp()
    except ValueError:
        start = float("inf")  # no time recorded: every kit may be older
    return [str(path) for path in written_kits(config) if path.stat().st_mtime < start]


def _next_steps(name: str, reference: str, location: str) -> list[str]:
    """What a person does after a new key was added for a password safehold cannot store."""
    variable = reference[4:]
    return [f"make {variable} hold the new password (from {location}) wherever safehold runs: the service's "
            f"environment or EnvironmentFile, the cron file, the shell; or point repositories.{name}.password at "
            f'"{location}"',
            f"run `safehold repo passwd {name} --remove-old-keys`: it checks that the configured password opens the "
            "new key, then removes every other key, so the old password stops working",
            "re-print the recovery kit (`safehold key kit --output FILE`), shred the old copies"]


def rotate(config: Config, name: str, new_reference: str | None, reporter: Reporter) -> dict[str, Any]:
    """Give repository `name` a new password (generated unless `new_reference` holds one) and
    remove the old keys; for a password from the environment, add the key and say what is left to do."""
    reference = _checked(config, name)
    from_env = reference.startswith("env:")
    if from_env and new_reference is None:
        raise ConfigError(f"repository {name} reads its password from the environment ({reference}), which "
                          "safehold cannot change",
                          "give the new password's place with --new-password-ref env:NAME or file:PATH (a file "
                          "that does not exist gets a generated password); nothing was changed")
    with repository_locks(config, [name], "repo passwd", reporter) as instances:
        repo = open_repository(config, name)
        reporter.step(f"{name}: opening it with the current password")
        repo.keys()  # fails here, before anything is written, when the current password does not open it
        new, location = _new_password(new_reference)
        if new == repo.password:
            raise ConfigError(f"the new password of {name} is the current one", "give another one, or none to "
                              "have one generated")
        key = _add_key(config, repo, new, location, reporter)
        if from_env:
            return {"repository": name, "done": False, "password": reference, "new_password": location,
                    "key": key, "keys_removed": [], "instances": instances,
                    "next_steps": _next_steps(name, reference, location), "stale_kits": []}
        password_file = Path(reference[5:]).expanduser().resolve()
        _store(password_file, new, reporter)
        result = _finish(config, name, repo.password, reporter)
    return {**result, "new_password": f"file:{password_file}", "instances": instances}


def change_password(config: Config, name: str, new_reference: str | None, remove_old_keys: bool,
                    reporter: Reporter) -> dict[str, Any]:
    """`safehold repo passwd`: a whole change, or (`remove_old_keys`) the end of a pending one."""
    if not remove_old_keys:
        return rotate(config, name, new_reference, reporter)
    if new_reference is not None:
        raise ConfigError("--remove-old-keys finishes a change already made: it takes no --new-password-ref",
                          "drop one of them")
    _checked(config, name)
    with repository_locks(config, [name], "repo passwd", reporter) as instances:
        return {**_finish(config, name, None, reporter), "instances": instances}


def lines(result: dict[str, Any]) -> list[Text]:
    """The result as printed: what changed, where the new password is, what to do next."""
    name = result["repository"]
    if not result["done"]:
        out = [Text.assemble(("new key added", "green"), f" to repository {name} (key {result['key'][:8]}); the old "
                             f"password still opens it until its keys are removed"),
               Text(f"the new password is in {result['new_password']}"), Text("next steps:")]
        return out + [Text(f"  {number}. {step}") for number, step in enumerate(result["next_steps"], 1)]
    removed = len(result["keys_removed"])
    proof = "the old password no longer opens it" if result["old_password_refused"] else "only the new key is left"
    out = [Text.assemble(("password changed", "green"), f": repository {name}, {removed} old key(s) removed, {proof}")]
    if result.get("new_password"):
        out.append(Text(f"the new password is in {result['new_password']} (where the config reads it)"))
    out.append(Text.assemble(("RE-PRINT THE RECOVERY KIT NOW", "bold red"),
                             ": every kit printed before holds the old password, which no longer opens "
                             f"{name}; run `safehold key kit --output FILE` and shred the old paper copies"))
    out += [Text.assemble(("stale:", "bold red"), f" {path} holds the old password: delete it")
            for path in result["stale_kits"]]
    return out

