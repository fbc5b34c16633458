"""What a point records of the host (PHP, web server) and how it becomes Debian package names."""

from __future__ import annotations

import shutil

import pytest

from safehold import hostinfo
from safehold.hostinfo import HostRequirements


def test_extensions_become_debian_package_names() -> None:
    needs = HostRequirements(php_version="8.2.36", web_servers=["apache2", "libapache2-mod-php8.2", "httpd"],
                             php_extensions=["core", "sodium", "mysqli", "mysqlnd", "pdo_mysql", "dom", "simplexml",
                                             "gd", "intl", "zend opcache", "mcrypt", "ctype"])
    assert needs.php_series() == "8.2"
    assert needs.packages() == ["php8.2-cli", "php8.2-common", "php8.2-mysql", "php8.2-xml", "php8.2-gd",
                                "php8.2-intl", "php8.2-opcache", "apache2", "libapache2-mod-php8.2"]
    assert needs.without_package() == ["mcrypt"]
    assert HostRequirements(web_servers=["nginx"]).packages() == ["nginx"]


def test_this_hosts_php_is_read_as_php_reports_it() -> None:
    if shutil.which("php") is None:
        pytest.skip("php is not installed (scripts/setup.sh installs PHP 8.2)")
    found = hostinfo.requirements(php=True)
    assert found.php_version and found.php_version.count(".") == 2
    assert {"core", "standard"} <= set(found.php_extensions) and found.php_extensions == sorted(found.php_extensions)
    assert not any(ext.startswith("[") for ext in found.php_extensions)
    assert hostinfo.requirements(php=False).php_version is None
    # A point whose PHP had what this one has, plus one extension it lacks: only that one is named.
    recorded = found.model_copy(update={"php_extensions": [*found.php_extensions, "imagick"]})
    line = hostinfo.lacking_here(recorded, "itflow")
    assert line == "PHP here lacks the extension(s) the point's itflow had loaded: imagick: install php8.2-imagick" \
        or found.php_series() != "8.2"
    assert hostinfo.lacking_here(found, "itflow") is None and hostinfo.lacking_here(None, "itflow") is None


def test_no_php_here_names_every_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert hostinfo.php_version() is None and hostinfo.php_modules() is None
    recorded = HostRequirements(php_version="8.2.1", php_extensions=["mysqli"], web_servers=["nginx", "php8.2-fpm"])
    assert hostinfo.lacking_here(recorded, "itop") == (
        "the point's itop ran on PHP 8.2.1, which is not installed here: install php8.2-cli php8.2-common php8.2-mysql "
        "nginx php8.2-fpm before using it")
