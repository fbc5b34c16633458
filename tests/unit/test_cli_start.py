"""Starting the CLI imports no library that only some commands use.

A nightly run of a small instance takes a few seconds, Python's start included: requests (incident
tickets), pycryptodome (the apps' decryption checks), prometheus_client (the /metrics page) and
apprise (notifications) cost tens of milliseconds each to import, so they are imported where used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LATE = ("requests", "Crypto", "prometheus_client", "apprise")


def test_the_cli_and_a_backup_import_none_of_the_late_libraries() -> None:
    code = ("import sys, safehold.cli, safehold.actions.backup; "
            f"print(','.join(m for m in {LATE!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_late_libraries_are_there_when_used() -> None:
    # The imports moved into functions still resolve: each decryption imports pycryptodome when called
    # (the /metrics page's prometheus_client is exercised by test_check_history_metrics).
    import base64

    from safehold.apps import glpi_crypto, itflow_crypto, laravel

    assert laravel.decrypt(base64.b64encode(b'{"iv": "", "value": "", "mac": ""}').decode(), b"k" * 32) is None
    assert itflow_crypto._cbc_decrypt(b"k" * 16, "i" * 16, base64.b64encode(bytes(32)).decode()) is None
    assert glpi_crypto.decrypt(base64.b64encode(bytes(48)).decode(), b"k" * 32) is None
