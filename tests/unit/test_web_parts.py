"""Pieces of the web console that need no services: masking, staleness, listen parsing, rate limits."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from safehold.config import ScheduleConfig, WebConfig, parse_listen
from safehold.errors import ConfigError, SafeholdError
from safehold.secrets import mask_url
from safehold.web.auth import RateLimiter
from safehold.web.data import describe_schedule, mask, stale_after_hours
from safehold.web.jobs import Job, JobRunner
from safehold.web.server import check_listen
from safehold.web.store import Store


def test_mask_keeps_references_and_hides_values() -> None:
    shown = mask({"password": "file:/etc/pass", "token": "abc", "urls": ["ntfy://user:pw@host/topic"],
                  "url": "rest:https://u:p@host/repo", "known_hosts": "host ssh-ed25519 AAAA"})
    assert shown == {"password": "file:/etc/pass", "token": "(hidden)", "urls": ["ntfy://(hidden)"],
                     "url": "rest:https://u:***@host/repo", "known_hosts": "host ssh-ed25519 AAAA"}
    # One rule for every form: a user name is shown (it is no secret), a password never.
    assert mask_url("sftp:backup@nas:/srv") == "sftp:backup@nas:/srv"
    assert mask_url("sftp://backup@nas:2222//srv") == "sftp://backup@nas:2222//srv"
    assert mask_url("sftp://backup:pw@nas//srv") == "sftp://backup:***@nas//srv"
    assert mask_url("rest:https://bob@rest.example.org/repo") == "rest:https://bob@rest.example.org/repo"


def test_mask_hides_a_password_holding_an_at_sign_and_a_url_without_scheme() -> None:
    # restic (Go) takes the authority's last @ as the end of the password
    assert mask_url("rest:https://bob:p@ss@rest.example.org/repo") == "rest:https://bob:***@rest.example.org/repo"
    assert mask_url("https://host/path?user=a@b") == "https://host/path?user=a@b"
    # a notification "URL" that is not one (a typo, a bare token) is hidden whole, not shown up to a colon
    assert mask({"urls": ["tgram//123456:bottoken/chat", "sometoken", "json://u:p@host"]}) == \
        {"urls": ["(hidden)", "(hidden)", "json://(hidden)"]}


def test_stale_threshold_follows_the_schedule() -> None:
    assert stale_after_hours(None) == 26
    # The point of the latest run due more than the grace ago must exist (or one started up to 15 min before
    # it): between grace and one gap plus grace old, plus those 15 min; the same rule as `check`.
    assert 2.25 <= stale_after_hours(ScheduleConfig(week_days=["sunday"])) <= 7 * 24 + 2.25
    every_day = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    assert 2.25 <= stale_after_hours(ScheduleConfig(week_days=every_day)) <= 24 + 2.25
    assert describe_schedule(ScheduleConfig(week_days=["monday", "friday"], time="01:00")) == "Mon, Fri 01:00 UTC"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8750") == ("127.0.0.1", 8750)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8750", "host:", ":80", "host:99999"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_trusted_proxies_and_allowed_hosts_are_checked_and_normalised() -> None:
    web = WebConfig(trusted_proxies=["127.0.0.1", "::1", "10.0.0.7/24"],
                    allowed_hosts=["Backup.Example.org", "*.example.net", "::1", "[2001:db8::1]"])
    assert web.trusted_proxies == ["127.0.0.1", "::1", "10.0.0.0/24"]  # uvicorn ignores "10.0.0.7/24"
    assert web.allowed_hosts == ["backup.example.org", "*.example.net", "[::1]", "[2001:db8::1]"]
    for bad in ({"trusted_proxies": ["*"]}, {"trusted_proxies": ["proxy.example.org"]},
                {"allowed_hosts": ["https://backup.example.org"]}, {"allowed_hosts": ["backup.example.org:443"]},
                {"allowed_hosts": ["*"]}):
        with pytest.raises(ValidationError):
            WebConfig(**bad)


def test_rate_limiter_blocks_after_failures_and_clears_on_success() -> None:
    limiter = RateLimiter(max_failures=3, window=60)
    for _ in range(2):
        assert limiter.attempt("user:a", "addr:x") == 0
    assert limiter.blocked("user:a") == 0
    assert limiter.attempt("user:a", "addr:x") == 0
    assert limiter.blocked("user:a") > 0 and limiter.blocked("addr:x") > 0 and limiter.blocked("user:b") == 0
    assert limiter.attempt("user:b", "addr:x") > 0  # refused, and not counted against user:b
    limiter.succeeded("user:a")
    assert limiter.blocked("user:a") == 0 and limiter.blocked("user:b") == 0


def test_rate_limiter_success_takes_back_only_its_own_attempt_from_the_address() -> None:
    limiter = RateLimiter(max_failures=3, window=60)
    for name in ("a", "b"):  # guesses at two accounts from one address
        assert limiter.attempt(f"user:{name}", "addr:x") == 0
    # logging into an account of one's own from there does not wipe the guesses out
    assert limiter.attempt("user:mine", "addr:x") == 0
    limiter.succeeded("user:mine", "addr:x")
    assert limiter.blocked("addr:x") == 0
    assert limiter.attempt("user:c", "addr:x") == 0
    assert limiter.blocked("addr:x") > 0


def test_rate_limiter_forgets_keys_that_are_never_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("safehold.web.auth.time.monotonic", lambda: clock[0])
    limiter = RateLimiter(max_failures=3, window=60)
    for i in range(50):  # many names, each guessed once from its own address
        limiter.attempt(f"user:n{i}", f"addr:10.0.0.{i}")
    clock[0] += 61
    limiter.attempt("user:late", "addr:x")
    assert len(limiter._failures) == 2  # noqa: SLF001 - what the limiter holds is the point


def test_listen_address_in_use_is_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"):
            check_listen("127.0.0.1", port)
    check_listen("127.0.0.1", port)  # free again
    with pytest.raises(ConfigError, match="use an address of this host"):
        check_listen("nosuchhost.invalid", port)


def test_damaged_account_database_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "web.sqlite").write_bytes(b"not sqlite at all " * 100)
    with pytest.raises(SafeholdError, match="account database .* is damaged .*safehold user add"):
        Store(tmp_path)


def test_a_user_name_that_cannot_be_typed_or_listed_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for name in ("", " bob", "bob ", "eve\nmallory", "eve\x1b[2J"):
        with pytest.raises(ConfigError, match="is empty, has spaces at either end or a control character"):
            store.add_user(name, "viewer", "long-enough-password")
    with pytest.raises(ConfigError, match="more than 100"):
        store.add_user("a" * 101, "viewer", "long-enough-password")
    store.add_user("a.smith@example.org", "viewer", "long-enough-password")
    assert store.users() == [{"name": "a.smith@example.org", "role": "viewer"}]


def test_history_of_a_quiet_instance_is_not_crowded_out_by_busy_ones(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    for i in range(45):  # three old runs of `quiet`, then 42 newer ones of `busy`
        job = Job(f"20260101T0000{i:02d}Z-abcd", "backup", "quiet" if i < 3 else "busy", "ops", created=1e9 + i,
                  state="ok")
        (runner.folder / f"{job.id}.json").write_text(json.dumps(job.to_dict()))
    for _ in range(2):  # the second time from what the first one remembered
        assert [j.id[:15] for j in runner.history("quiet", limit=15)] == \
            ["20260101T000002", "20260101T000001", "20260101T000000"]
        assert [j.instance for j in runner.history("busy", limit=15)] == ["busy"] * 15
        assert runner.history(limit=5)[0].id.startswith("20260101T000044")
    runner.shutdown()
