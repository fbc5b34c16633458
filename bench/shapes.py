"""Database shapes the benchmarks build, importable by every bench script.

Not a test. Each shape fills a fresh MariaDB database with generated rows of realistic sizes:

- `itflow`: the real ITFlow schema (../shared/fixtures/itflow-schema.sql), bytes spread over
  ticket_replies (50 %), logs (25 %) and tickets (22 %), small tables for the rest (the shape of
  bench/mariadb.py since the first session);
- `itflow-dominant`: the same schema with one table holding most bytes (ticket_replies 70 %,
  logs 15 %, tickets 12 %), the shape real ITFlow databases grow into;
- `itop-blob`: an iTop-shaped database (attachment, ticket, change history and ~30 small tables)
  whose `attachment.contents_data` LONGBLOB column holds ~85 % of the bytes, half of them random
  (incompressible PDFs and images) and half compressible text.

Usage from another bench script (bench/ is on sys.path when a script there runs):

    from shapes import build
    build("itop-blob", "t_mine_blob", 3000, Path("/tmp/work"))

The generator is seeded, so the same shape and size always gives the same rows.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import MySQLdb
from benchlib import sh, sh_quote

ROOT = Path(__file__).resolve().parents[1]
ITFLOW_SCHEMA = ROOT.parent / "shared" / "fixtures" / "itflow-schema.sql"  # ../shared next to the main checkout
HOST = ["-h127.0.0.1", "-P3306", "-uroot"]
ROW_BYTES = {"ticket_replies": 2000, "logs": 250, "tickets": 1500}
ITFLOW_SHARES = {
    "itflow": {"ticket_replies": 0.50, "logs": 0.25, "tickets": 0.22},
    "itflow-dominant": {"ticket_replies": 0.70, "logs": 0.15, "tickets": 0.12},
}
SETTLED_DIRTY_PAGES = 2000  # 32 MiB of 16 KiB pages; other users of the server keep some pages dirty


def connect(database: str | None = None) -> MySQLdb.Connection:
    """A root connection to the local server (LOAD DATA LOCAL allowed, autocommit)."""
    return MySQLdb.connect(host="127.0.0.1", user="root", database=database or "", local_infile=1,
                           charset="utf8mb4", autocommit=True)


def settle(limit_seconds: float = 60) -> None:
    """Wait until InnoDB has written back the dirty pages of earlier steps, so each run starts equal."""
    deadline = time.monotonic() + limit_seconds
    with connect() as conn:
        cur = conn.cursor()
        while time.monotonic() < deadline:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
            if int(cur.fetchone()[1]) < SETTLED_DIRTY_PAGES:
                return
            time.sleep(2)


class Text:
    """Cheap realistic text: sentences from a big pool of random words, so compressors see real entropy."""

    def __init__(self, rng: random.Random, schema: Path = ITFLOW_SCHEMA) -> None:
        words = [w for w in schema.read_text().replace("_", " ").replace("`", " ").split() if w.isalpha()]
        words += ["printer", "outlook", "password", "reset", "server", "backup", "firewall", "license", "VPN",
                  "please", "thanks", "regards", "customer", "ticket", "issue", "resolved", "update", "laptop"]
        vocabulary = sorted(set(words))
        self.rng = rng
        self.sentences = [" ".join(rng.choices(vocabulary, k=rng.randint(6, 16))).capitalize() + "."
                          for _ in range(60_000)]

    def paragraph(self, size: int) -> str:
        """About `size` characters of sentences."""
        parts, length = [], 0
        while length < size:
            sentence = self.rng.choice(self.sentences) + f" #{self.rng.randint(1, 10**6)}"
            parts.append(sentence)
            length += len(sentence) + 1
        return " ".join(parts)


def field(value: object) -> bytes:
    """One LOAD DATA field (backslash escapes, `\\N` for NULL); bytes stay bytes."""
    if value is None:
        return b"\\N"
    raw = value if isinstance(value, bytes) else str(value).encode()
    return raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\t", b"\\t")


def tsv(rows: list[tuple], path: Path) -> None:
    """Append rows as LOAD DATA lines."""
    with path.open("ab") as handle:
        for row in rows:
            handle.write(b"\t".join(field(v) for v in row) + b"\n")


def load(cur, table: str, columns: list[str], path: Path) -> None:  # noqa: ANN001 - MySQLdb cursor
    """LOAD DATA the lines of `path` into `table` (bytes as they are), then delete the file."""
    cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}` CHARACTER SET binary ({','.join(columns)})")
    path.unlink()


def stamp(rng: random.Random) -> str:
    """A random DATETIME text between 2018 and 2025."""
    return f"20{rng.randint(18, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} " \
           f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"


def fresh(database: str, schema_sql: str | Path) -> MySQLdb.Connection:
    """Drop and create `database`, run its schema; a connection with checks off for the bulk load."""
    with connect() as conn:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        conn.cursor().execute(f"CREATE DATABASE `{database}`")
    if isinstance(schema_sql, Path):
        sh(f"mariadb {' '.join(HOST)} {database} < {sh_quote(str(schema_sql))}")
    else:
        conn = connect(database)
        conn.cursor().execute(schema_sql)
        while conn.next_result() == 0:
            pass
        conn.close()
    conn = connect(database)
    conn.cursor().execute("SET SESSION foreign_key_checks=0, unique_checks=0")
    return conn


def build_itflow(database: str, size_mb: int, work: Path, shares: dict[str, float],
                 schema: Path = ITFLOW_SCHEMA) -> None:
    """The ITFlow schema filled so the three big tables hold `shares` of `size_mb`."""
    rng = random.Random(42)
    text = Text(rng, schema)
    conn = fresh(database, schema)
    cur = conn.cursor()
    path = work / "rows.tsv"
    clients = 400
    tsv([(i, f"Client {i} GmbH", "Managed", f"https://client{i}.example", "EUR", 30, text.paragraph(300),
          stamp(rng)) for i in range(1, clients + 1)], path)
    load(cur, "clients", ["client_id", "client_name", "client_type", "client_website", "client_currency_code",
                          "client_net_terms", "client_notes", "client_created_at"], path)
    tsv([(i, f"Contact {i}", "IT", f"user{i}@client{i % clients}.example", f"+49 30 {rng.randint(10**6, 10**7)}",
          text.paragraph(120), rng.randint(1, clients)) for i in range(1, 8001)], path)
    load(cur, "contacts", ["contact_id", "contact_name", "contact_title", "contact_email", "contact_phone",
                           "contact_notes", "contact_client_id"], path)
    kinds = ["Laptop", "Server", "Firewall", "Printer"]
    tsv([(i, rng.choice(kinds), f"ASSET-{i:06d}", "Dell", f"SN{rng.getrandbits(40)}", text.paragraph(150),
          rng.randint(1, clients)) for i in range(1, 15001)], path)
    load(cur, "assets", ["asset_id", "asset_type", "asset_name", "asset_make", "asset_serial", "asset_notes",
                         "asset_client_id"], path)
    counts = {t: int(size_mb * 1e6 * share / ROW_BYTES[t]) for t, share in shares.items()}
    batch = 20_000
    for start in range(1, counts["tickets"] + 1, batch):
        tsv([(i, "TCK", i, f"Ticket {i}: {text.paragraph(60)}", f"<p>{text.paragraph(1200)}</p>",
              rng.choice(["Low", "Medium", "High"]), rng.randint(1, 5), stamp(rng), rng.randint(1, 20),
              rng.randint(1, clients)) for i in range(start, min(start + batch, counts["tickets"] + 1))], path)
        load(cur, "tickets", ["ticket_id", "ticket_prefix", "ticket_number", "ticket_subject", "ticket_details",
                              "ticket_priority", "ticket_status", "ticket_created_at", "ticket_created_by",
                              "ticket_client_id"], path)
    for start in range(1, counts["ticket_replies"] + 1, batch):
        tsv([(i, "<p>" + text.paragraph(rng.randint(800, 3000)).replace(". ", ".</p>\n<p>", 3) + "</p>",
              rng.choice(["public", "private"]), stamp(rng), rng.randint(1, 20), rng.randint(1, counts["tickets"]))
             for i in range(start, min(start + batch, counts["ticket_replies"] + 1))], path)
        load(cur, "ticket_replies", ["ticket_reply_id", "ticket_reply", "ticket_reply_type", "ticket_reply_created_at",
                                     "ticket_reply_by", "ticket_reply_ticket_id"], path)
    append_logs(cur, rng, text, 1, counts["logs"], path)
    cur.execute("ANALYZE TABLE tickets, ticket_replies, logs")
    cur.fetchall()
    conn.close()


def append_logs(cur, rng: random.Random, text: Text, first: int, count: int, path: Path) -> None:  # noqa: ANN001
    """Append `count` ITFlow log rows with ids from `first`."""
    for start in range(first, first + count, 50_000):
        tsv([(i, rng.choice(["Login", "Ticket", "Client", "Asset"]), rng.choice(["Create", "Edit", "View", "Success"]),
              text.paragraph(rng.randint(60, 180)), f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", stamp(rng), rng.randint(1, 400))
             for i in range(start, min(start + 50_000, first + count))], path)
        load(cur, "logs", ["log_id", "log_type", "log_action", "log_description", "log_ip", "log_user_agent",
                           "log_created_at", "log_client_id"], path)


# iTop's tables as its setup creates them (the columns that matter for size; iTop 3.x names).
ITOP_SCHEMA = """
CREATE TABLE `attachment` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `expire` datetime DEFAULT NULL,
  `temp_id` varchar(255) DEFAULT '',
  `item_class` varchar(255) DEFAULT '',
  `item_id` varchar(255) DEFAULT '',
  `item_org_id` int(11) DEFAULT 0,
  `contents_data` longblob DEFAULT NULL,
  `contents_mimetype` varchar(255) DEFAULT NULL,
  `contents_filename` varchar(255) DEFAULT NULL,
  `creation_date` datetime DEFAULT NULL,
  `user_id` int(11) DEFAULT 0,
  `contact_id` int(11) DEFAULT 0,
  PRIMARY KEY (`id`),
  KEY `temp_id` (`temp_id`),
  KEY `item_class_item_id` (`item_class`,`item_id`),
  KEY `item_org_id` (`item_org_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `ticket` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `operational_status` enum('closed','ongoing','resolved') DEFAULT 'ongoing',
  `ref` varchar(255) DEFAULT '',
  `org_id` int(11) DEFAULT 0,
  `caller_id` int(11) DEFAULT 0,
  `agent_id` int(11) DEFAULT 0,
  `title` varchar(255) DEFAULT '',
  `description` longtext DEFAULT NULL,
  `start_date` datetime DEFAULT NULL,
  `last_update` datetime DEFAULT NULL,
  `private_log` longtext DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `org_id` (`org_id`),
  KEY `caller_id` (`caller_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `priv_change` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `date` datetime DEFAULT NULL,
  `userinfo` varchar(255) DEFAULT '',
  `origin` enum('interactive','csv-import.php','csv-interactive','custom-extension','email-processing',
    'synchro-data-source','webservice-rest','webservice-soap') DEFAULT 'interactive',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `priv_changeop` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `changeid` int(11) DEFAULT 0,
  `objclass` varchar(255) DEFAULT '',
  `objkey` int(11) DEFAULT 0,
  `optype` varchar(255) DEFAULT 'CMDBChangeOp',
  `attcode` varchar(255) DEFAULT '',
  `oldvalue` text DEFAULT NULL,
  `newvalue` text DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `changeid` (`changeid`),
  KEY `objclass_objkey` (`objclass`,`objkey`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
"""
ITOP_SMALL_TABLES = 30
ITOP_SHARES = {"attachment": 0.85, "ticket": 0.08, "priv_changeop": 0.07}
MIME_TYPES = ("application/pdf", "image/png", "image/jpeg", "text/plain", "message/rfc822")


def build_itop_blob(database: str, size_mb: int, work: Path) -> None:
    """iTop-shaped: attachment BLOBs ~85 % of the bytes, half random (incompressible), half text."""
    rng = random.Random(43)
    text = Text(rng)
    small = "".join(f"CREATE TABLE `small_{n:02d}` (`id` int(11) NOT NULL AUTO_INCREMENT, `name` varchar(255),"
                    " `status` enum('active','inactive'), `body` text, PRIMARY KEY (`id`), KEY `name` (`name`))"
                    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;"
                    for n in range(ITOP_SMALL_TABLES))
    conn = fresh(database, ITOP_SCHEMA + small)
    cur = conn.cursor()
    path = work / "rows.tsv"
    for n in range(ITOP_SMALL_TABLES):
        tsv([(i, f"item {n}-{i}", rng.choice(["active", "inactive"]), text.paragraph(rng.randint(20, 400)))
             for i in range(1, 201)], path)
        load(cur, f"small_{n:02d}", ["id", "name", "status", "body"], path)
    budget = {table: size_mb * 1e6 * share for table, share in ITOP_SHARES.items()}
    tickets = int(budget["ticket"] / 2500)
    for start in range(1, tickets + 1, 10_000):
        tsv([(i, rng.choice(["closed", "ongoing", "resolved"]), f"R-{i:06d}", rng.randint(1, 50),
              rng.randint(1, 5000), rng.randint(1, 40), f"Ticket {i}: {text.paragraph(60)}",
              f"<p>{text.paragraph(1500)}</p>", stamp(rng), stamp(rng), text.paragraph(800))
             for i in range(start, min(start + 10_000, tickets + 1))], path)
        load(cur, "ticket", ["id", "operational_status", "ref", "org_id", "caller_id", "agent_id", "title",
                             "description", "start_date", "last_update", "private_log"], path)
    changeops = int(budget["priv_changeop"] / 300)
    for start in range(1, changeops + 1, 50_000):
        tsv([(i, i // 3 + 1, "UserRequest", rng.randint(1, tickets), "CMDBChangeOpSetAttributeScalar",
              rng.choice(["status", "agent_id", "priority"]), text.paragraph(100), text.paragraph(100))
             for i in range(start, min(start + 50_000, changeops + 1))], path)
        load(cur, "priv_changeop", ["id", "changeid", "objclass", "objkey", "optype", "attcode", "oldvalue",
                                    "newvalue"], path)
    tsv([(i, stamp(rng), f"agent {i % 40}", "interactive") for i in range(1, changeops // 3 + 2)], path)
    load(cur, "priv_change", ["id", "date", "userinfo", "origin"], path)
    row, written = 1, 0.0
    while written < budget["attachment"]:
        rows = []
        for _ in range(20):
            size = rng.randint(20_000, 600_000)
            # Odd rows are random bytes (a scanned PDF, a photo), even rows text that compresses.
            contents = os.urandom(size) if row % 2 else text.paragraph(size).encode()[:size]
            rows.append((row, None, "", "UserRequest", str(rng.randint(1, max(tickets, 1))), rng.randint(1, 50),
                         contents, rng.choice(MIME_TYPES), f"file-{row}.bin", stamp(rng), rng.randint(1, 40), 0))
            row += 1
            written += size
        tsv(rows, path)
        load(cur, "attachment", ["id", "expire", "temp_id", "item_class", "item_id", "item_org_id", "contents_data",
                                 "contents_mimetype", "contents_filename", "creation_date", "user_id", "contact_id"],
             path)
    cur.execute("ANALYZE TABLE attachment, ticket, priv_changeop")
    cur.fetchall()
    conn.close()


SHAPES: dict[str, Callable[[str, int, Path], None]] = {
    "itflow": lambda database, size_mb, work: build_itflow(database, size_mb, work, ITFLOW_SHARES["itflow"]),
    "itflow-dominant": lambda database, size_mb, work: build_itflow(database, size_mb, work,
                                                                    ITFLOW_SHARES["itflow-dominant"]),
    "itop-blob": build_itop_blob,
}


def build(shape: str, database: str, size_mb: int, work: Path) -> None:
    """Create `database` (dropped first if it exists) filled as `shape` with about `size_mb` MB of rows.

    `work` is a scratch folder for the row files (a few MB at a time).
    """
    work.mkdir(parents=True, exist_ok=True)
    SHAPES[shape](database, size_mb, work)


def largest_table(database: str) -> tuple[str, float, float]:
    """The table holding the most bytes (data + indexes), its share of the database, and the database's MB."""
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT TABLE_NAME, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
                    " WHERE TABLE_SCHEMA=%s ORDER BY 2 DESC", (database,))
        sizes = [(name, float(size)) for name, size in cur.fetchall()]
    total = sum(size for _, size in sizes)
    return sizes[0][0], sizes[0][1] / total, total / 1e6
