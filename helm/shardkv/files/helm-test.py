"""`helm test`: put a key through the REST API of the node that owns it, read it back, delete it.

Runs in the shardkv image (rendered into the <fullname>-scripts ConfigMap). It waits, up to
SHARDKV_TEST_TIMEOUT seconds, for a coordinator to serve a map in which every shard has a
primary, then routes the key with shardkv's own ring, as a client does, and talks plain HTTP
with urllib so that what is tested is the REST surface. Exit status 0 = passed.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.ring import shard_for_key

COORDINATORS = [u for u in os.environ["SHARDKV_COORDINATOR"].split(",") if u]
DEADLINE = time.monotonic() + float(os.environ.get("SHARDKV_TEST_TIMEOUT", "180"))


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def serving_map():
    """The first map, from any coordinator, where every shard has a primary with a URL."""
    last = "no coordinator answered"
    while time.monotonic() < DEADLINE:
        for base in COORDINATORS:
            try:
                status, _, body = request("GET", f"{base}/v1/map",
                                          headers={"Accept": "application/json"})
            except OSError as exc:
                last = f"{base}: {exc}"
                continue
            if status != 200:
                last = f"{base}: HTTP {status}"
                continue
            cluster_map = ClusterMap.from_dict(json.loads(body))
            missing = [s for s in cluster_map.shards if cluster_map.primary_of(s) is None]
            if cluster_map.shards and not missing:
                return cluster_map
            last = f"map v{cluster_map.version}: shards without a primary: {missing or 'all'}"
        time.sleep(2)
    sys.exit(f"FAIL: the cluster did not serve in time ({last})")


def main():
    key = f"helm-test/{uuid.uuid4().hex}"
    value = f"written by helm test at {time.time():.0f}".encode()
    path = "/v1/kv/" + urllib.parse.quote(key, safe="")
    while True:
        cluster_map = serving_map()
        shard = shard_for_key(cluster_map, key.encode())
        node_url = cluster_map.primary_of(shard).url
        status, headers, body = request("PUT", node_url + path, value)
        if status == 200:
            break
        if status in (421, 503) and time.monotonic() < DEADLINE:  # failover under way
            print(f"put answered {status}, retrying: {body[:200]!r}")
            time.sleep(2)
            continue
        sys.exit(f"FAIL: PUT {node_url}{path} -> {status} {body[:500]!r}")
    version = json.loads(body)["version"]
    print(f"put {key} on shard {shard} ({node_url}): version {version}")

    status, headers, body = request("GET", node_url + path)
    if status != 200 or body != value:
        sys.exit(f"FAIL: GET -> {status} {body[:500]!r}, expected {value!r}")
    etag = headers.get("ETag") or headers.get("Etag")
    if etag != f'"{version}"':
        sys.exit(f"FAIL: GET ETag {etag!r}, expected the put's version {version}")
    print(f"get {key}: value and version {version} match")

    status, _, body = request("DELETE", node_url + path)
    if status != 200 or not json.loads(body).get("deleted"):
        sys.exit(f"FAIL: DELETE -> {status} {body[:500]!r}")
    print("PASS")


if __name__ == "__main__":
    main()
