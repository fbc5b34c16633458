#!/usr/bin/env bash
# Installs what safehold and its tests need on a fresh Debian 12 machine (run as root), and starts
# the local MariaDB/PostgreSQL servers the integration tests use if they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

packages=(restic mariadb-client libmariadb-dev pkg-config zstd sqlite3 openssh-server openssh-client
          chromium mydumper age gzip procps
          # the physical MariaDB method (mariadb-backup, mbstream) and its tests
          mariadb-backup
          # the real applications the integration tests install (ITFlow, iTop, i-doit): PHP 8.2 and its extensions
          php-cli php-mysql php-curl php-gd php-intl php-mbstring php-xml php-zip php-imap php-soap php-ldap
          php-apcu php-bcmath graphviz
          # the real NetBox test: psycopg[c] builds against libpq-dev; NetBox's queue and cache need a redis-server
          libpq-dev redis-server)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

if ! mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  echo "setup: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 60); do mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
fi
if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  echo "setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
echo "setup: ready (restic $(restic version | awk '{print $2}'))"
