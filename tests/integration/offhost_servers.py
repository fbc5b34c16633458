"""Real servers for the off-host tests: OpenSSH's sshd and moto's S3 server on 127.0.0.1, free ports.

sshd runs as root with a throwaway host key and user key (AuthorizedKeysFile points into its own
folder, so no account is touched); `root` logs in for normal runs and `nobody` for the permission
test. moto runs with IAM enforcement after the first three requests, which create the one user
whose access key the tests use, so a wrong access key is really rejected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from safehold.actions.kit import toml_value
from tests.conftest import need, private_file, run_cli

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _descendants(pid: int) -> list[int]:
    """Child processes (recursively) of a process we started, read from /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "safehold-test", "-f", str(path)],
                   check=True)
    return path


@dataclass
class Sshd:
    """A running sshd; `stop()` kills it and every session it forked, `start()` brings it back."""

    folder: Path
    port: int
    user_key: Path
    host_pub: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "ab"))  # noqa: SIM115
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.proc.wait()
        self.proc = None

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_pub.split()[:2])}"

    def area(self, name: str, owner: str = "root") -> Path:
        """A folder on the 'server' (world-traversable, owned by `owner`) for a repository."""
        path = self.folder / "srv" / name
        path.mkdir(parents=True)
        if owner != "root":
            shutil.chown(path, owner)
        return path


def start_sshd() -> Sshd:
    need(Path(SSHD).exists(), "openssh-server is not installed")
    need(os.geteuid() == 0, "the sshd tests run sshd as root (logins as root and as nobody)")
    folder = Path(tempfile.mkdtemp(prefix="safehold-sshd-"))
    folder.chmod(0o755)
    (folder / "srv").mkdir(mode=0o755)
    host_key = keygen(folder / "host_key")
    user_key = keygen(folder / "user_key")
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "user_key.pub").read_text())
    authorized.chmod(0o644)  # read by sshd as the login user (nobody in the permission test)
    port = free_port()
    (folder / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {folder}/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    server = Sshd(folder, port, user_key, (folder / "host_key.pub").read_text())
    server.start()
    return server


@dataclass
class Moto:
    """moto's S3 server with one IAM user whose keys are enforced."""

    port: int
    access_key: str
    secret_key: str
    proc: subprocess.Popen[bytes]
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
                     aws_secret_access_key=self.secret_key).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_moto(log: Path, enforce_keys: bool = False) -> Moto:
    """moto's S3 server; with `enforce_keys`, only the created user's keys are accepted.

    moto 5.2 miscomputes the signature of S3 list requests (`delimiter=/`) when it enforces keys,
    so the normal cycle runs on a server that accepts any key and the key tests on one that checks.
    """
    need(shutil.which("moto_server") is not None, "moto[server] is not installed")
    import boto3

    port = free_port()
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if enforce_keys else {})}
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
    wait_port(port, 30)
    iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="safehold")
    key = iam.create_access_key(UserName="safehold")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="safehold", PolicyName="all", PolicyDocument=json.dumps(policy))
    return Moto(port, key["AccessKeyId"], key["SecretAccessKey"], proc)


def user_without_rights(moto: Moto) -> tuple[str, str]:
    """Keys of a second user that may do nothing (for the permission-denied case)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def write_config(path: Path, repositories: dict[str, dict[str, object]], instances: dict[str, dict[str, object]],
                 extra: str = "") -> Path:
    """A safehold.toml with a private state dir next to it."""
    lines = ["[settings]", f"state_dir = {toml_value(str(path.parent / 'state'))}", ""]
    for name, repo in repositories.items():
        lines += [f"[repositories.{name}]", *[f"{k} = {toml_value(v)}" for k, v in repo.items()], ""]
    for name, instance in instances.items():
        lines += [f"[instances.{name}]", *[f"{k} = {toml_value(v)}" for k, v in instance.items()], ""]
    path.write_text("\n".join(lines) + extra)
    return path


def password_file(folder: Path, name: str = "repo.pass") -> Path:
    """A fresh 0600 repository password file."""
    import secrets

    return private_file(folder / "secrets" / name, secrets.token_urlsafe(24))


def make_tree(root: Path) -> dict[str, bytes]:
    """A small application file tree; returns relative path → content."""
    files = {"index.php": b"<?php echo 'hi';\n", "uploads/a.txt": b"attachment " * 500,
             "uploads/deep/b.bin": os.urandom(20000), "config.php": b"<?php $db='x';\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def restore_first_then_prune(tmp_path: Path, config: Path, app: Path, run_id: str) -> None:
    """Restore the first of two points (made from make_tree) elsewhere, then prune it away with `last = 1`."""
    target = tmp_path / "restored"
    restored = run_cli("restore", "app", run_id, "--files-to", str(target), config=config)
    assert restored.returncode == 0, restored.stderr
    assert read_tree(target / str(app).lstrip("/"))["index.php"] == b"<?php echo 'hi';\n"
    with config.open("a") as fh:
        fh.write("retention = { last = 1 }\n")
    pruned = run_cli("prune", "app", "--json", config=config)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)[0]["remove"] == [run_id]
