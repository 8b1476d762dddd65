"""The data commands end to end against a real standalone node (`--node`): human output and
`--json` output, exit statuses. Most invocations go through the CLI's `main()` in this process
(the same code a `shardkv` process runs, without paying an interpreter start per command on
a busy CI machine); a few run as real `shardkv` subprocesses to cover the entry point itself."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from shardkv.cluster.cli import main

pytestmark = pytest.mark.integration


def shardkv(*args: str, stdin: bytes | None = None, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "shardkv.cluster.cli", *args],
        input=stdin, capture_output=True, timeout=60, env=env, cwd=cwd,
    )


@pytest.fixture
def cli(capfdbinary, monkeypatch):
    """``cli(*args, stdin=b"")`` runs ``shardkv ARGS`` in-process: (status, stdout, stderr)."""
    monkeypatch.delenv("SHARDKV_COORDINATORS", raising=False)

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capfdbinary.readouterr()
        status = main(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = capfdbinary.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    return run


def test_the_entry_point_runs_as_a_process(node) -> None:
    done = shardkv("put", "--node", node.url, "proc", "ess")
    assert done.returncode == 0, done.stderr
    done = shardkv("get", "--node", node.url, "proc")
    assert (done.returncode, done.stdout) == (0, b"ess\n")


def test_data_commands_human_and_json(node, cli) -> None:
    def ok(*args: str, **kw) -> str:
        done = cli(*args, **kw)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout.decode()

    def as_json(*args: str, **kw):
        return json.loads(ok(*args, "--json", **kw))

    at = ("--node", node.url)
    version = int(ok("put", *at, "greeting", "hello"))
    assert ok("get", *at, "greeting") == "hello\n"
    got = as_json("get", *at, "greeting")
    assert got == {"key": "greeting", "found": True, "value": "hello", "version": version,
                   "expires_at": None}

    missing = cli("get", *at, "nope")
    assert missing.returncode == 1 and b"not found" in missing.stderr
    assert json.loads(cli("get", *at, "nope", "--json").stdout) == {
        "key": "nope", "found": False}

    # CAS through the CLI: a stale version is refused with its code and exit status 1
    stale = cli("put", *at, "greeting", "x", "--if-version", str(version + 100), "--json")
    assert stale.returncode == 1
    assert json.loads(stale.stdout)["error"] == "VERSION_MISMATCH"

    assert ok("incr", *at, "n") == "1\n"
    assert as_json("incr", *at, "n", "--by", "9") == {"key": "n", "value": 10}

    assert as_json("mput", *at, "a=1", "b=2", "c=3")[2]["key"] == "c"
    assert ok("mget", *at, "a", "zz", "c") == "a\t1\nzz\t(not found)\nc\t3\n"
    assert [r.get("value") for r in as_json("mget", *at, "a", "zz")] == ["1", None]

    assert ok("scan", *at, "--prefix", "").splitlines()[0] == "a\t1"
    scanned = as_json("scan", *at, "--start", "a", "--end", "c")
    assert [r["key"] for r in scanned] == ["a", "b"]

    assert ok("del", *at, "a") == "deleted\n"
    assert as_json("del", *at, "a")["deleted"] is False

    # a binary-safe value from stdin
    ok("put", *at, "blob", "-", stdin=b"\x00\xffraw")
    assert as_json("get", *at, "blob")["value"] == {"b64": "AP9yYXc="}

    status = as_json("status", *at)
    assert status["healthy"] and status["shards"][0]["members"][0]["health"] == "ok"
    assert "primary" in ok("status", *at)


def test_load_jsonl_and_csv_with_progress(node, cli, tmp_path: Path) -> None:
    def ok(*args: str) -> str:
        done = cli(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout.decode()

    at = ("--node", node.url)
    jsonl = tmp_path / "data.jsonl"
    lines = [json.dumps({"key": f"j:{i:04d}", "value": f"v{i}"}) for i in range(500)]
    lines.insert(10, "{not json")
    lines.append(json.dumps({"key": "j:obj", "value": {"nested": True}}))
    jsonl.write_text("\n".join(lines) + "\n")
    done = cli("load", *at, str(jsonl), "--batch", "64")
    assert done.returncode == 0, done.stderr
    assert b"loaded 501 keys" in done.stdout
    assert b"1 lines skipped" in done.stdout
    assert b"100.0%" in done.stderr  # the progress bar reached the end
    # Each skipped line is named, with its number and reason; --strict makes it fail.
    assert f"skipped {jsonl}:line 11: ".encode() in done.stderr
    strict = cli("load", *at, str(jsonl), "--strict", "--quiet")
    assert strict.returncode == 1
    assert strict.stderr.count(b"skipped ") == 1 and b"--strict: 1 lines" in strict.stderr
    assert ok("get", *at, "j:0499") == "v499\n"
    assert json.loads(ok("get", *at, "j:obj")) == {"nested": True}

    csv_file = tmp_path / "data.csv"
    csv_file.write_text("key,value\n" + "".join(f"c:{i},{i * i}\n" for i in range(100)))
    report = json.loads(ok("load", *at, str(csv_file), "--json"))
    assert report["loaded"] == 100 and report["skipped"] == 0 and report["format"] == "csv"
    assert ok("get", *at, "c:9") == "81\n"


def test_scan_gives_text_keys_for_text_and_bytes_for_bytes(node) -> None:
    from shardkv.client import SyncClient

    with SyncClient(nodes=[node.url]) as kv:
        kv.mput({"tk:1": b"a", "tk:2": b"b"})
        keys = [item.key for item in kv.scan("tk:")]
        assert keys == ["tk:1", "tk:2"]
        assert kv.get(keys[0]).value == b"a"  # a scanned key goes straight back to get
        assert [item.key for item in kv.scan(b"tk:")] == [b"tk:1", b"tk:2"]


def test_where_is_the_cluster(tmp_path: Path, cli) -> None:
    lost = cli("get", "k", "--dir", str(tmp_path / "none"))
    assert lost.returncode == 2
    assert b"--coordinator" in lost.stderr
    # DIR/cluster.json names the coordinators; a dead one is reported as UNAVAILABLE
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cluster.json").write_text(json.dumps(
        {"coordinators": [{"id": "c1", "url": "http://127.0.0.1:9", "pid": None}],
         "nodes": []}))
    down = cli("get", "k", "--dir", str(tmp_path / "c"), "--json", "--timeout", "1")
    assert down.returncode == 1
    assert json.loads(down.stdout)["error"] == "UNAVAILABLE"
