"""A bash script that loads a `parallel` dump without safehold: GNU tar, zstd, paste and the mariadb client.

Every parallel dump carries it as its member `restore.sh`, so a point comes back on a host where
safehold cannot be installed (`restic dump` → `tar -xOf DUMP restore.sh` → `bash restore.sh DUMP
DB`). It is generated from the dump's table list, with every LOAD DATA statement spelled out, so
it needs no JSON parser; it depends on nothing but the table list, so equal schemas give equal
bytes. It favours plainness over speed: one connection, indexes built during the load, and the
uncompressed rows on disk in a temporary folder.
"""

from __future__ import annotations

import json
import re
import shlex

from safehold.engines.mariadb.client import quote
from safehold.engines.mariadb.loader import HISTORY_SESSION, LOAD_SESSION
from safehold.engines.mariadb.stream import (
    DATA_SUFFIX,
    POST_MEMBER,
    REPORT_MEMBER,
    SCHEMA_MEMBER,
    SCRIPT_MEMBER,
    data_member,
)
from safehold.engines.mariadb.tables import Table

END = "SAFEHOLD_END_OF_SQL"
# Compares the loaded row counts with the dump's closing report. That report is written by
# json.dumps(indent=1, sort_keys=True), so a table's entry opens with the exact line listed in
# keys.tsv and its "rows" line follows within the entry.
COMPARE = r"""awk -F'\t' '
  FILENAME == "keys.tsv" { want[$2] = $1; name[$1] = $3; next }
  FILENAME == "report.json" {
    if ($0 in want) cur = want[$0]
    else if (cur != "" && $0 ~ /^   "rows": /) {
      v = $0; sub(/^   "rows": /, "", v); sub(/,$/, "", v); rows[cur] = v; cur = ""
    }
    next
  }
  { n++ }
  !($1 in rows) || rows[$1] != $2 {
    bad++; print "table " name[$1] ": " $2 " rows loaded, the dump recorded " rows[$1] > "/dev/stderr"
  }
  END { if (bad) exit 1; print n " tables: every row count matches the dump" }' keys.tsv report.json counts.tsv"""


def _stream_file(table: Table, wide: bool = False) -> str:
    """Where the script's tar run collects the rows of one chunk stream."""
    return data_member(table.index, wide) + ".tsv"


def script(head: dict) -> str:
    """The restore script for the dump whose table list (tables.json) is `head`."""
    tables = [Table.from_json(item) for item in head["tables"]]
    source = head["database"]
    character_set, collation = head["charset"]
    session = LOAD_SESSION + ";" + (f"\n{HISTORY_SESSION};" if any(t.versioned for t in tables) else "")
    files = [_stream_file(t) for t in tables] + [_stream_file(t, True) for t in tables if t.split]
    pastes, loads = [], []
    for table in tables:
        path = _stream_file(table)
        if table.split:
            wide = _stream_file(table, True)
            path = f"data/{table.index:05d}.joined.tsv"
            pastes.append(f"join_columns {shlex.quote(_stream_file(table))} {shlex.quote(wide)} {shlex.quote(path)}")
        loads.append(table.load("", path) + ";")
    keys = "\n".join(f"{t.index}\t  {json.dumps(t.name)}: {{\t{t.name}" for t in tables)
    counts = " UNION ALL ".join(f"SELECT {t.index}, COUNT(*) FROM {quote(t.name)}"
                                + (" FOR SYSTEM_TIME ALL" if t.versioned else "") for t in tables)
    check = f"""
echo "checking row counts against the dump's report"
tar -xOf "$dump" {REPORT_MEMBER} > report.json
cat > keys.tsv <<'{END}'
{keys}
{END}
"$mariadb" "$@" -N -B "$db" > counts.tsv <<'{END}'
{counts};
{END}
{COMPARE}
""" if tables else ""
    # The server writes view bodies with the database name; a restore under another name moves them.
    pattern = re.sub(r"([\\/.*\[\]^$])", r"\\\1", f"`{source}`.")
    move_views = "cat" if "'" in source else f"sed 's/{pattern}/'\"\\`$db\\`.\"'/g'"
    return f"""#!/bin/bash
# Loads this safehold parallel MariaDB dump of `{source}` without safehold.
# Needs bash, GNU tar, zstd, paste and the mariadb client; free space in $TMPDIR for the uncompressed rows.
#
#   tar -xOf DUMP.tar {SCRIPT_MEMBER} > restore.sh
#   bash restore.sh DUMP.tar DATABASE [mariadb client options, e.g. -h HOST -u USER -p]
#
# DATABASE must not exist yet. Ends by comparing every table's row count with the dump's report.
# The client runs once per step: give the password in a file (first option
# --defaults-extra-file=FILE, or ~/.my.cnf) rather than -p, which would ask each time.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash $0 DUMP.tar DATABASE [mariadb options]" >&2; exit 2; fi
case "$2" in *[!A-Za-z0-9_]*|'') echo "use a plain database name (letters, digits, _)" >&2; exit 2;; esac
dump=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
db=$2
shift 2
mariadb=${{MARIADB:-mariadb}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"

join_columns() {{  # narrow and wide columns of a split table: line n belongs to line n
  if [ "$(wc -l < "$1")" != "$(wc -l < "$2")" ]; then
    echo "the two column streams of $1 differ in length: the dump is damaged" >&2; exit 1
  fi
  paste -d '\\t' "$1" "$2" > "$3"
  rm -f "$1" "$2"
}}

echo "creating database $db"
"$mariadb" "$@" -e "CREATE DATABASE \\`$db\\` CHARACTER SET {character_set} COLLATE {collation}"
tar -xOf "$dump" {SCHEMA_MEMBER} | {move_views} | "$mariadb" "$@" "$db"

echo "unpacking rows into $work"
mkdir data
touch {" ".join(shlex.quote(f) for f in files)}
tar -xf "$dump" --wildcards 'data/*{DATA_SUFFIX}' --to-command='zstd -dq >> "$TAR_FILENAME.tsv"'
{chr(10).join(pastes)}

echo "loading rows"
"$mariadb" "$@" --local-infile=1 "$db" <<'{END}'
{session}
{chr(10).join(loads)}
{END}

echo "creating triggers, routines and events"
tar -xOf "$dump" {POST_MEMBER} | "$mariadb" "$@" "$db"
{check}
echo "done: $db restored from $dump"
"""
