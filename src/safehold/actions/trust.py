"""`safehold trust add|list|remove`: the keys whose signed exports this installation restores."""

from __future__ import annotations

from pathlib import Path

from safehold import signing
from safehold.config import Config
from safehold.errors import ConfigError


def add(config: Config, key: str) -> dict[str, object]:
    """Trust the key given as its line, or as a file holding that line."""
    text = key
    if not key.startswith(signing.PREFIX):
        path = Path(key)
        if not path.is_file():
            raise ConfigError(f"{key!r} is neither a `{signing.PREFIX} ...` key nor a file",
                              "give the key line from the other installation's recovery kit, or a file holding it")
        text = path.read_text()
    public = signing.parse_public(text)
    signing.trust_add(config.state_dir, public)
    return {"fingerprint": public.fingerprint, "key": public.line}


def listing(config: Config) -> list[dict[str, object]]:
    """This installation's own key first, then every added one."""
    own = signing.own_public(config.state_dir)
    rows: list[dict[str, object]] = [{"fingerprint": own.fingerprint, "key": own.line, "which": "this installation"}]
    for fingerprint, line in sorted(signing.added_keys(config.state_dir).items()):
        if fingerprint != own.fingerprint:
            rows.append({"fingerprint": fingerprint, "key": line, "which": "added"})
    return rows


def remove(config: Config, fingerprint: str) -> dict[str, object]:
    """Stop trusting an added key."""
    signing.trust_remove(config.state_dir, fingerprint)
    return {"fingerprint": fingerprint}
