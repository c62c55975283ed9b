"""A registry in an S3 bucket, end to end, on a real S3-compatible HTTP server on 127.0.0.1
(moto's ThreadedMotoServer): the real CLI in subprocesses, s3fs over real sockets, no
mocked filesystem object. A grid killed with SIGKILL and resumed from the periodic
checkpoint in the bucket, ``continue`` from a checkpoint in the bucket on a machine with
an empty cache, the read commands, bad registries (exit 2, one line, no secret shown) and
a connection lost mid-grid (exit 1, ``--resume`` finishes it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from moto.server import ThreadedMotoServer  # noqa: E402

from conftest import wait_until  # noqa: E402

CLI = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
CHEAP = ["--batch-size", "8", "--eval-samples", "300", "--device", "cpu", "--threads", "1", "--metrics", "kl,mig",
         "--strategy", "sequential"]
#: Never seen in any output, record or log: the tests' secret key.
SECRET = "s3cr3t-Zq7vXw-never-shown"


@pytest.fixture(scope="module")
def s3():
    """``(endpoint URL, boto3 S3 client)`` of a loopback S3 server holding bucket ``lab``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key=SECRET)
    client.create_bucket(Bucket="lab")
    yield endpoint, client
    server.stop()


def env_for(endpoint: str, cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAEBENCH_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=endpoint, VAEBENCH_CACHE_DIR=str(cache))
    env.update(extra)
    return env


def vaebench(*args: object, env: dict[str, str], prefix: str = "") -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", prefix + CLI, *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert SECRET not in result.stdout + result.stderr
    return result


def keys(client, prefix: str) -> list[str]:  # noqa: ANN001
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lab", Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_grid_killed_resumed_continued_and_read_from_the_bucket(s3, tmp_path):
    endpoint, client = s3
    env = env_for(endpoint, tmp_path / "cache")
    url = "s3://lab/flow"
    grid = ["run", "--betas", "1,4", "--steps", "200", *CHEAP, "--checkpoint-every", "20", "--registry", url]
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *grid], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
    try:
        wait_until(lambda: any(k.endswith("/partial/COMPLETE") for k in keys(client, "flow/artifacts/"))
                   or proc.poll() is not None, 120, "a periodic checkpoint in the bucket")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert not keys(client, "flow/runs/"), "killed before any run finished"
    marker = next(k for k in keys(client, "flow/artifacts/") if k.endswith("/partial/COMPLETE"))
    step = json.loads(client.get_object(Bucket="lab", Key=marker)["Body"].read())["step"]
    assert step % 20 == 0 and any(f"/partial/step-{step}/training_state" in k for k in keys(client, "flow/artifacts/"))

    resumed = vaebench(*grid, "--resume", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    runs = json.loads(resumed.stdout)
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert any(f"picked up from its periodic checkpoint at step {step}" in (r["error"] or "") for r in runs)
    assert len(keys(client, "flow/runs/")) == 2
    stored = keys(client, "flow/artifacts/")
    assert not [k for k in stored if "/partial" in k], "periodic checkpoints are removed once recorded"
    for run in runs:  # every artifact a record names is in the bucket
        assert run["artifacts"]["checkpoint"] == f"artifacts/{run['run_id']}/{run['attempt']}/model.safetensors"
        assert all(f"flow/{path}" in stored for path in run["artifacts"].values())
    first = runs[0]["run_id"]

    # Another machine (an empty cache): continue from the checkpoint in the bucket.
    other = env_for(endpoint, tmp_path / "other-cache")
    cont = vaebench("continue", first[:8], "--steps", "20", "--registry", url, "--device", "cpu", "--threads", "1",
                    "--eval-samples", "300", "--metrics", "kl", "--json", env=other)
    assert cont.returncode == 0, cont.stderr
    child = json.loads(cont.stdout)
    assert child["status"] == "ok" and child["parent_run_id"] == first and child["steps_done"] == 220
    assert f"flow/artifacts/{child['run_id']}/{child['attempt']}/model.safetensors" in keys(client, "flow/artifacts/")

    board = vaebench("leaderboard", "--registry", url, "--metric", "kl", env=other)
    assert board.returncode == 0 and "beta_vae" in board.stdout, board.stderr
    show = vaebench("show", first[:8], "--registry", url, env=other)
    assert show.returncode == 0 and first in show.stdout, show.stderr
    rows = vaebench("query", "SELECT run_id, status FROM runs ORDER BY run_id", "--registry", url, "--json", env=other)
    assert rows.returncode == 0 and {r["run_id"] for r in json.loads(rows.stdout)} >= {first, child["run_id"]}, rows.stderr
    cmp = vaebench("compare", first[:8], child["run_id"][:8], "--registry", url, "--json", env=other)
    assert cmp.returncode == 0, cmp.stderr
    targets = tmp_path / "targets.toml"
    targets.write_text('[[target]]\nname = "mig"\nselect = { model = "beta_vae", steps = 200 }\nmetric = "mig"\n'
                       'threshold = 0.0\n')
    check = vaebench("check", "--targets", targets, "--registry", url, env=other)
    assert check.returncode == 0, check.stdout + check.stderr
    report = vaebench("report", "--registry", url, "--out", tmp_path / "report", env=other)
    assert report.returncode == 0, report.stderr
    assert list((tmp_path / "report").rglob("*.png")), "figures copied from the bucket"
    for command in ("traverse", "samples"):
        made = vaebench(command, first[:8], "--registry", url, "--out", tmp_path / command, env=other)
        assert made.returncode == 0, made.stderr
        assert list((tmp_path / command).iterdir())
    for path in (tmp_path / "report").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()


@pytest.mark.parametrize("registry, expected", [
    ("foo://x/reg", "unknown URL scheme 'foo'"),
    ("s3://no-such-bucket/reg", "bucket 'no-such-bucket' does not exist"),
])
def test_bad_registry_is_one_line_exit_2_before_training(s3, tmp_path, registry, expected):
    endpoint, _ = s3
    env = env_for(endpoint, tmp_path / "cache")
    result = vaebench("run", "--steps", "20", *CHEAP, "--registry", registry, env=env)
    assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "training" not in result.stderr + result.stdout
    targets = tmp_path / "targets.toml"
    targets.write_text('[[target]]\nname = "mig"\nselect = { model = "beta_vae" }\nmetric = "mig"\nthreshold = 0.0\n')
    commands = {  # each path to the registry once: a record read, the read-only view, artifacts, a write
        "foo": [["show", "abcdef"], ["query", "SELECT 1"], ["traverse", "abcdef"], ["continue", "abcdef", "--steps", "5"]],
        "s3": [["leaderboard"], ["check", "--targets", targets], ["report", "--out", tmp_path / "r"],
               ["samples", "abcdef"]],
    }[registry.split(":")[0]]
    for command in commands:
        read = vaebench(*command, "--registry", registry, env=env)
        assert read.returncode == 2 and expected in read.stderr and read.stderr.count("\n") == 1, (command, read.stderr)


def test_s3_filesystem_not_installed_says_how_to_install_it(s3, tmp_path):
    endpoint, _ = s3
    result = vaebench("run", "--steps", "20", *CHEAP, "--registry", "s3://lab/x", env=env_for(endpoint, tmp_path),
                      prefix="import sys; sys.modules['s3fs'] = None; ")
    assert result.returncode == 2 and "pip install 'vaebench[s3]'" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_endpoint_option_reaches_the_store(s3, tmp_path):
    endpoint, _ = s3
    env = env_for(endpoint, tmp_path / "cache")
    del env["AWS_ENDPOINT_URL"]  # without it the real AWS would be asked, which this machine cannot reach
    result = vaebench("--s3-endpoint-url", endpoint, "leaderboard", "--registry", "s3://no-such-bucket/x", env=env)
    assert result.returncode == 2 and "bucket 'no-such-bucket' does not exist" in result.stderr, result.stderr


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` that can be cut (every connection
    closed, new ones refused) and restored on the same port: a real connection lost."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        assert self.listener is not None
        self.listener.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.conns.clear()


def test_connection_lost_mid_grid_fails_cleanly_and_resume_finishes(s3, tmp_path):
    endpoint, client = s3
    host, port = endpoint.rsplit("/", 1)[1].split(":")
    proxy = Proxy((host, int(port)))
    env = env_for(f"http://127.0.0.1:{proxy.port}", tmp_path / "cache", AWS_MAX_ATTEMPTS="2")
    url = "s3://lab/cut"
    grid = ["run", "--betas", "1,4", "--steps", "60", *CHEAP, "--checkpoint-every", "20", "--registry", url]
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *grid], stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        wait_until(lambda: keys(client, "cut/runs/") or proc.poll() is not None, 120, "the first record")
        proxy.cut()
        proc.wait(timeout=180)
    finally:
        proc.kill()
    log = (tmp_path / "err").read_text()
    assert proc.returncode == 1, log
    # the run in training when the connection went cannot be recorded; a point not yet
    # started cannot be claimed: either way nothing half-written, exit 1, said in one line
    assert ("record not written" in log or "claim could not be taken" in log) and SECRET not in log
    assert len(keys(client, "cut/runs/")) == 1
    recorded = keys(client, "cut/runs/")[0].split("/")[-1].split(".")[0]
    other = [k for k in keys(client, "cut/artifacts/") if f"/{recorded}/" not in k]
    assert not [k for k in other if "/partial/" not in k], "no artifacts of an unrecorded run stay"

    proxy.open()  # the same port again: the store is back
    resumed = vaebench(*grid, "--resume", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(keys(client, "cut/runs/")) == 2 and "already recorded" in resumed.stderr + resumed.stdout
    proxy.cut()


def test_wrong_credentials_and_a_read_only_registry_stop_before_training(tmp_path):
    """A moto server that checks credentials (IAM after its first 4 calls): a user allowed
    to read only, and keys it does not know."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30, "the server")
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        boto3.client("s3", **kw).create_bucket(Bucket="readonly")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        cases = [(key["AccessKeyId"], key["SecretAccessKey"], "cannot write: access denied"),
                 ("AKIAUNKNOWN", SECRET, "cannot read: access denied")]
        for access, secret, expected in cases:
            env = env_for(endpoint, tmp_path / "cache", AWS_ACCESS_KEY_ID=access)
            env["AWS_SECRET_ACCESS_KEY"] = secret
            result = vaebench("run", "--steps", "20", *CHEAP, "--registry", "s3://readonly/reg", env=env)
            assert result.returncode == 2 and expected in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1 and secret not in result.stderr + result.stdout
    finally:
        server.kill()
        server.wait()


def test_an_endpoint_that_never_answers_fails_in_bounded_time(tmp_path):
    """A server that accepts connections and then never answers (a hung proxy, a stopped
    process): the command fails with one line within the S3 limits (``location.S3_CONFIG``,
    shortened here to 2 s and one attempt) instead of hanging; before, botocore's 60 s read
    timeout was retried by botocore and again by s3fs, minutes per request."""
    import time

    with socket.socket() as listener:  # accepts (the kernel's backlog) and never reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        shorter = ("from vaebench.registry import location; "
                   "location.S3_CONFIG.update(read_timeout=2, retries={'max_attempts': 1, 'mode': 'standard'}); ")
        started = time.monotonic()
        result = vaebench("leaderboard", "--registry", "s3://lab/stalled", env=env_for(endpoint, tmp_path / "cache"),
                          prefix=shorter)
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "timeout" in lines[0].lower(), result.stderr
    assert elapsed < 60, elapsed  # a hang bound, not a speed claim
