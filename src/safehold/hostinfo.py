"""What the host gives an application besides its own files: PHP (version, loaded extensions) and the
web server. A backup records it in the point's manifest, the recovery kit turns it into the Debian
packages to install, and a restore from nothing warns about an extension the new host lacks.

Everything here is best effort: a probe that cannot run says nothing, and never fails a run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from safehold import runner

PHP_VERSION = re.compile(rb"^PHP (\d+\.\d+(?:\.\d+)?)", re.M)
# systemd's unit folders, and where Debian puts daemons that are not on a user's PATH.
UNIT_FOLDERS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
APACHE_MODS = Path("/etc/apache2/mods-enabled")
# Debian's php8.2-* package of each extension that is not named after it; those built into PHP (or
# php-common) need none. Other extensions are in php8.2-<name> (gd, curl, intl, ldap, zip…).
BUILT_IN = frozenset({
    "core", "date", "filter", "hash", "json", "libxml", "openssl", "pcntl", "pcre", "random", "reflection", "session",
    "spl", "standard", "zlib", "sodium", "calendar", "ctype", "exif", "ffi", "fileinfo", "ftp", "gettext", "iconv",
    "pdo", "phar", "posix", "shmop", "sockets", "sysvmsg", "sysvsem", "sysvshm", "tokenizer"})
PACKAGE_OF = {"mysqli": "mysql", "mysqlnd": "mysql", "pdo_mysql": "mysql", "dom": "xml", "simplexml": "xml",
              "xmlreader": "xml", "xmlwriter": "xml", "xsl": "xml", "pdo_pgsql": "pgsql", "pdo_sqlite": "sqlite3",
              "zend opcache": "opcache"}
NO_PACKAGE = frozenset({"mcrypt"})  # gone from PHP and from Debian: PECL only


class HostRequirements(BaseModel):
    """What the host provided when the point was made (recorded in the manifest)."""

    php_version: str | None = Field(default=None, description="as `php -v` said it, e.g. 8.2.36")
    php_extensions: list[str] = Field(default_factory=list, description="`php -m`, lower case, sorted")
    web_servers: list[str] = Field(default_factory=list, description="web server and PHP runtime packages found, "
                                                                     "e.g. apache2, libapache2-mod-php8.2, nginx, "
                                                                     "php8.2-fpm")

    def php_series(self) -> str | None:
        """The major.minor Debian names its PHP packages by (php8.2-…), or None."""
        return ".".join(self.php_version.split(".")[:2]) if self.php_version else None

    def packages(self) -> list[str]:
        """The Debian packages that give a new host the same PHP extensions and web server."""
        series = self.php_series()
        names: list[str] = []
        if series:
            names += [f"php{series}-cli", f"php{series}-common"]
            names += [f"php{series}-{package_for(ext)}" for ext in self.php_extensions
                      if ext not in BUILT_IN and ext not in NO_PACKAGE]
        names += [w for w in self.web_servers if w != "httpd"]
        return list(dict.fromkeys(names))

    def without_package(self) -> list[str]:
        """Extensions Debian packages no longer (PECL or built by hand)."""
        return [ext for ext in self.php_extensions if ext in NO_PACKAGE]


def package_for(extension: str) -> str:
    """The php<series>-<this> package that holds a PHP extension (`php -m`'s name, lower case)."""
    return PACKAGE_OF.get(extension, extension.replace("_", "-"))


def php_modules() -> set[str] | None:
    """The extensions `php -m` lists, lower case (None: no php here, or it failed)."""
    found = _php("-m")
    if found is None:
        return None
    lines = (line.strip().lower() for line in found.decode(errors="replace").splitlines())
    return {line for line in lines if line and not line.startswith("[")}


def php_version() -> str | None:
    """PHP's version as `php -v` prints it (None: no php here)."""
    found = _php("-v")
    match = PHP_VERSION.search(found or b"")
    return match.group(1).decode() if match else None


def _php(flag: str) -> bytes | None:
    if shutil.which("php") is None:
        return None
    try:
        return runner.run(["php", flag], what="php")
    except (runner.ProcessFailed, OSError):
        return None


def web_servers() -> list[str]:
    """Web servers and PHP runtimes installed here, by their Debian package names where Debian has one:
    found as systemd units or binaries (apache2, httpd, nginx, php8.2-fpm) and Apache's PHP module."""
    found: set[str] = set()
    for folder in UNIT_FOLDERS:
        for pattern in ("apache2.service", "httpd.service", "nginx.service", "php*-fpm.service"):
            found |= {unit.name.removesuffix(".service") for unit in _glob(folder, pattern)}
    path = f"{os.environ.get('PATH', '')}{os.pathsep}{SBIN}"
    found |= {binary for binary in ("apache2", "httpd", "nginx") if shutil.which(binary, path=path)}
    for sbin in (Path("/usr/sbin"), Path("/usr/local/sbin")):
        found |= {f"php{fpm.name.removeprefix('php-fpm')}-fpm" for fpm in _glob(sbin, "php-fpm[0-9]*")}
    found |= {f"libapache2-mod-{module.stem}" for module in _glob(APACHE_MODS, "php*.load")}
    return sorted(found)


def _glob(folder: Path, pattern: str) -> list[Path]:
    try:
        return list(folder.glob(pattern))
    except OSError:
        return []


def requirements(php: bool) -> HostRequirements:
    """What this host provides an app: PHP's version and extensions (asked only for a PHP app, `php`)
    and the web server. Never raises for a missing or failing probe."""
    found = HostRequirements(web_servers=web_servers())
    if php:
        found.php_version = php_version()
        found.php_extensions = sorted(php_modules() or ())
    return found


def lacking_here(recorded: HostRequirements | None, app: str) -> str | None:
    """What this host lacks of a point's recorded PHP, as one warning line (None: nothing, or nothing
    recorded): PHP itself, or the extensions the app had loaded, with the Debian packages that bring them."""
    if recorded is None or not recorded.php_version:
        return None
    modules = php_modules()
    if modules is None:
        return (f"the point's {app} ran on PHP {recorded.php_version}, which is not installed here: install "
                f"{' '.join(recorded.packages())} before using it")
    missing = HostRequirements(php_version=recorded.php_version,
                               php_extensions=[ext for ext in recorded.php_extensions if ext not in modules])
    if not missing.php_extensions:
        return None
    packages = [name for name in missing.packages() if not name.endswith(("-cli", "-common"))]
    install = f": install {' '.join(packages)}" if packages else ""
    return (f"PHP here lacks the extension(s) the point's {app} had loaded: {', '.join(missing.php_extensions)}"
            f"{install}")
