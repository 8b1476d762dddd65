"""The post-upgrade hook of a `shards` change: start the migration of every shard the cluster
map lacks (docs/kubernetes.md, "Scaling"), one at a time, and wait for each to be done.

Runs in the shardkv image (rendered into the <fullname>-scripts ConfigMap) with the admin
token. Idempotent, so a retried or re-run hook is safe: a shard already in the ring is left
alone, a migration already running (an earlier attempt of this hook, or an operator's) is
waited for, and nothing is ever removed (lowering `shards` is refused by the chart unless the
shard was drained with `shardkv shard remove`). Exit status 0 = every shard s1..sN is in the
ring; 1 = a migration failed or was aborted, or the deadline passed (its reason is printed).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

COORDINATORS = [u for u in os.environ.get("SHARDKV_COORDINATOR", "").split(",") if u]
SHARDS = int(os.environ.get("SHARDKV_SHARDS", "0"))
DEADLINE = time.monotonic() + float(os.environ.get("SHARDKV_HOOK_TIMEOUT", "3600"))
TOKEN = os.environ.get("SHARDKV_ADMIN_TOKEN", "")
FINISHED = ("done", "aborted", "failed")


def call(method, path, body=None):
    """(status, decoded body) from the first coordinator that answers."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json",
               "Authorization": f"Bearer {TOKEN}"}
    last = "no coordinator configured"
    for base in COORDINATORS:
        req = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")
        except OSError as exc:
            last = f"{base}: {exc}"
    return 0, {"error": "UNAVAILABLE", "message": last}


def missing_shards(cluster_map, count):
    """The shards of s1..s<count> that the ring does not include, in order."""
    ring = (cluster_map.get("ring") or {}).get("shards") or {}
    return [f"s{i}" for i in range(1, count + 1) if f"s{i}" not in ring]


def wait_migration(migration):
    while time.monotonic() < DEADLINE:
        status, record = call("GET", f"/admin/migrations/{migration}")
        if status == 200:
            print(f"{migration} {record['state']} {record.get('keys_moved', 0)} keys",
                  flush=True)
            if record["state"] in FINISHED:
                return record
        time.sleep(2)
    raise SystemExit(f"migration {migration} did not finish before the hook's deadline")


def main():
    while time.monotonic() < DEADLINE:
        status, cluster_map = call("GET", "/v1/map")
        if status != 200 or not (cluster_map or {}).get("shards"):
            time.sleep(2)  # coordinators restarting, or not bootstrapped yet
            continue
        running = cluster_map.get("migration")
        if running:
            record = wait_migration(running["id"])
            if record["state"] != "done":
                print(f"migration {record['id']} {record['state']}: {record.get('error')}",
                      file=sys.stderr)
                return 1
            continue
        missing = missing_shards(cluster_map, SHARDS)
        if not missing:
            print(f"every shard s1..s{SHARDS} is in the ring")
            return 0
        status, answer = call("POST", "/admin/shards", {"shard": missing[0]})
        if status != 202:
            print(f"adding {missing[0]}: {answer}", file=sys.stderr, flush=True)
            time.sleep(2)  # e.g. an aborted migration's targets still cleaning: retry
            continue
        print(f"migration {answer['migration']} adds shard {missing[0]}", flush=True)
    print("the hook's deadline passed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
