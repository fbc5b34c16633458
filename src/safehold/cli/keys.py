"""Key and repository housekeeping: key escrow/verify/kit, repo trust/passwd."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from safehold.cli.common import ConfigOpt, JsonOpt, app, load_config, out, problem_line, run_action
from safehold.errors import EXIT_FAILED
from safehold.output import Reporter

key_app = typer.Typer(no_args_is_help=True, help="Application keys: escrow and check them; the recovery kit.")


app.add_typer(key_app, name="key")


@key_app.command("escrow")
def key_escrow(
    instance: Annotated[str, typer.Argument(help="instance name (an ITFlow instance)")],
    password_ref: Annotated[str | None, typer.Option("--password-ref", help="env:NAME or file:PATH holding the "
                                                     "admin's ITFlow password (default: prompt)")] = None,
    user: Annotated[str | None, typer.Option(help="email of the ITFlow account (default: try each)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Unwrap ITFlow's master key with an admin password, prove it, keep it for every point."""
    from safehold.actions.keys import check_escrow, escrow
    from safehold.secrets import Secret, resolve

    def action(reporter: Reporter) -> dict[str, Any]:
        cfg = load_config(config)
        check_escrow(cfg, instance)  # before the password: no point asking for one that cannot be used
        if password_ref:
            password = resolve(password_ref, "--password-ref")
        else:
            password = Secret(typer.prompt("ITFlow password of an admin account", hide_input=True, err=True), "prompt")
        return escrow(cfg, instance, password, user, reporter)

    run_action(json_out, action, lambda res: out.print(Text.assemble(
              ("master key escrowed", "green"), f" for {res['instance']} (account {res['user']}); "
              + (f"it decrypts credential #{res['proved_on_credential']}" if res["proved_on_credential"] else
                 "no credential stored yet to test it on")), soft_wrap=True))


@key_app.command("verify")
def key_verify(
    instance: Annotated[str, typer.Argument(help="instance name")],
    run: Annotated[str | None, typer.Argument(help="check the keys inside this point (default: escrowed)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prove the escrowed keys (or a point's keys) still unlock the live instance's data."""
    from safehold.actions.keys import verify as verify_keys

    def render(res: dict[str, Any]) -> None:
        for problem in res["problems"]:
            out.print(problem_line(problem), soft_wrap=True)
        if res["ok"]:
            out.print(Text.assemble(("keys ok", "green"), f" ({', '.join(res['keys']) or 'none'}) from the "
                                    f"{res['source']}"), soft_wrap=True)

    run_action(json_out, lambda r: verify_keys(load_config(config), instance, run, r), render,
               lambda res: 0 if res["ok"] else EXIT_FAILED)


@key_app.command("kit")
def key_kit(output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write (once)")] = None,
            config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write the printable recovery kit (repository passwords, escrowed keys, restore steps)."""
    from safehold.actions.kit import write_kit

    run_action(json_out, lambda r: write_kit(load_config(config), output, r),
               lambda res: out.print(f"wrote {res['path']} (mode 0600): print it, keep it safe, delete the file"))


repo_app = typer.Typer(help="Repository housekeeping (SSH host keys, passwords).", no_args_is_help=True)


app.add_typer(repo_app, name="repo")


@repo_app.command("trust")
def repo_trust(name: Annotated[str, typer.Argument(help="sftp repository name")],
               yes: Annotated[bool, typer.Option("--yes", help="accept the shown fingerprint without asking")] = False,
               replace: Annotated[bool, typer.Option(help="replace a pinned key that changed")] = False,
               config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Pin the SSH host key of an sftp repository (shows the fingerprint first)."""
    from safehold.repository.ssh import trust

    def confirm(host: str, prints: list[str]) -> bool:
        if not sys.stdin.isatty():
            return False
        return typer.confirm(f"{host} presents {', '.join(prints)}. Does this match the server's fingerprint?",
                             err=True)

    run_action(json_out, lambda r: trust(load_config(config), name, yes, replace, confirm),
               lambda res: out.print(f"{res['host']}: {', '.join(res['fingerprints'])} "
                                     f"{'pinned in ' + res['known_hosts'] if res['changed'] else 'already pinned'}"))


@repo_app.command("passwd")
def repo_passwd(name: Annotated[str, typer.Argument(help="repository name")],
                new_password_ref: Annotated[str | None, typer.Option(
                    help="env:NAME or file:PATH holding the new password (a missing file gets a generated one); "
                         "default: generate one; required when the password is an env: reference")] = None,
                remove_old_keys: Annotated[bool, typer.Option("--remove-old-keys", help="finish a pending change: "
                                                              "remove every key but the new one")] = False,
                config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Change a repository's password (someone who knew it left): add a new key, store it, remove the old keys."""
    from safehold.actions.repo_password import change_password, lines

    def render(res: dict[str, Any]) -> None:
        for line in lines(res):
            out.print(line, soft_wrap=True)

    run_action(json_out, lambda r: change_password(load_config(config), name, new_password_ref, remove_old_keys, r),
               render)


trust_app = typer.Typer(no_args_is_help=True, help="Keys whose signed exports this installation restores.")
app.add_typer(trust_app, name="trust")


@trust_app.command("add")
def trust_add(key: Annotated[str, typer.Argument(help="the key line `safehold-ed25519 ...` (from the other "
                                                      "installation's `trust list` or recovery kit), or a file "
                                                      "holding it")],
              config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Trust exports signed by another installation's key."""
    from safehold.actions.trust import add

    run_action(json_out, lambda r: add(load_config(config), key),
               lambda res: out.print(f"trusted {res['fingerprint']}"))


@trust_app.command("list")
def trust_list(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """This installation's signing key and the keys it trusts, with their fingerprints."""
    from safehold.actions.trust import listing

    def render(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            out.print(f"{row['fingerprint']}  {row['which']}\n  {row['key']}", soft_wrap=True)

    run_action(json_out, lambda r: listing(load_config(config)), render)


@trust_app.command("remove")
def trust_remove(fingerprint: Annotated[str, typer.Argument(help="SHA256:... as `safehold trust list` shows")],
                 config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Stop trusting an added key."""
    from safehold.actions.trust import remove

    run_action(json_out, lambda r: remove(load_config(config), fingerprint),
               lambda res: out.print(f"no longer trusted: {res['fingerprint']}"))
