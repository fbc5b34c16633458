"""Web console accounts: user add/list/remove."""

from __future__ import annotations

from typing import Annotated

import typer

from safehold.cli.common import ConfigOpt, JsonOpt, app, load_config, out, run_action, shown
from safehold.output import Reporter

# The audit log's "user" for account changes made on the host itself.
COMMAND_LINE = "(command line)"


user_app = typer.Typer(help="Accounts of the web console.", no_args_is_help=True)


app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="viewer (read-only) or operator (backup, restore, verify, drill, export)")],
    password_ref: Annotated[str | None, typer.Option(help="env:NAME or file:PATH holding the password "
                                                          "(default: ask)")] = None,
    replace: Annotated[bool, typer.Option(help="reset the password and role of an existing user")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a console account; the password is asked for, or read from a secret reference."""
    from safehold.secrets import resolve
    from safehold.web.store import Store

    def action(reporter: Reporter) -> dict[str, str]:
        cfg = load_config(config)
        if password_ref:
            password = resolve(password_ref, "--password-ref").reveal()
        else:
            password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
        store = Store(cfg.state_dir)
        store.add_user(name, role, password, replace=replace)
        store.audit(COMMAND_LINE, None, "user reset" if replace else "user add", name, role)
        return {"user": name, "role": role}

    run_action(False, action, lambda res: out.print(f"user {res['user']} ({res['role']}) saved"))


@user_app.command("list")
def user_list(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Console accounts and their roles."""
    from safehold.web.store import Store

    def render(users: list[dict[str, object]]) -> None:
        for user in users:
            out.print(f"{shown(str(user['name']))}  {user['role']}")  # a name added before names were checked
        if not users:
            out.print("no accounts yet: safehold user add NAME --role operator")

    run_action(json_out, lambda r: Store(load_config(config).state_dir).users(), render)


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="user name")], config: ConfigOpt = None) -> None:
    """Delete a console account (someone left); its open sessions end at once."""
    from safehold.web.store import Store

    def action(reporter: Reporter) -> str:
        store = Store(load_config(config).state_dir)
        store.remove_user(name)
        store.audit(COMMAND_LINE, None, "user remove", name, "ok")
        return name

    run_action(False, action, lambda removed: out.print(f"user {removed} removed; their sessions are closed"))
