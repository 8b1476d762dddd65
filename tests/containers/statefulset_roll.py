"""A StatefulSet's rolling update, played on containers: what ``helm upgrade`` does to a
shardkv cluster, without a Kubernetes cluster.

For each pod, from the highest ordinal down, the StatefulSet controller deletes the pod (the
kubelet sends SIGTERM and waits at most ``terminationGracePeriodSeconds`` before SIGKILL),
creates it again on the same volume, and moves to the next ordinal only once the new pod is
Ready. Ready is the pod's readiness probe: from ``initialDelaySeconds`` after the start, an
HTTP GET every ``periodSeconds`` (answered 200-399 within ``timeoutSeconds``), Ready after
``successThreshold`` successes in a row. Here:

- the pod is a container: ``docker stop --time <grace>`` (SIGTERM, then SIGKILL) and
  ``docker start`` again (same anonymous volume for /data, as a PersistentVolumeClaim);
- the probe and the grace period are the ones the chart renders with its default values
  (``chart_pod_settings``, through Helm's own Go code as in ``test_chart.py``), so what is
  tested is the chart's contract: ``/ready`` means caught up (``docs/rolling-restarts.md``);
- the prober (``wait_ready``) follows the kubelet's rules above, polling the container's
  published port from the host.

The write load runs in the cluster's driver container (``LOAD``): writers put unique keys
across both shards, each at most one put every ``pace_s``, time each put and log each
acknowledged key; ``CHECK`` reads every logged key back.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from container_harness import RunningContainer

CHART = Path(__file__).resolve().parents[2] / "helm" / "shardkv"


@dataclass(frozen=True)
class ReadinessProbe:
    """A rendered ``httpGet`` readiness probe (its port resolved to a number)."""

    path: str
    port: int
    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int

    @classmethod
    def from_container(cls, container: dict[str, Any]) -> ReadinessProbe:
        probe = container["readinessProbe"]
        port = probe["httpGet"]["port"]
        if isinstance(port, str):  # a named port
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        return cls(probe["httpGet"]["path"], int(port), probe.get("initialDelaySeconds", 0),
                   probe.get("periodSeconds", 10), probe.get("timeoutSeconds", 1),
                   probe.get("successThreshold", 1))


@dataclass(frozen=True)
class PodSettings:
    """What the chart gives one kind of pod: its readiness probe, its grace period, its env."""

    probe: ReadinessProbe
    grace_s: int
    env: dict[str, str]


def chart_pod_settings() -> dict[str, PodSettings]:
    """``{"node": ..., "coordinator": ...}`` from the chart rendered with its defaults."""
    import helm_python
    import yaml

    with helm_python.Chart.load(str(CHART)) as chart:
        files = chart.render({}, name="roll", namespace="kv", is_install=True)
    settings: dict[str, PodSettings] = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if not document or document.get("kind") != "StatefulSet":
                continue
            component = document["metadata"]["labels"]["app.kubernetes.io/component"]
            pod = document["spec"]["template"]["spec"]
            container = pod["containers"][0]
            env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
            settings[component] = PodSettings(ReadinessProbe.from_container(container),
                                              int(pod["terminationGracePeriodSeconds"]), env)
    return settings


def _probe_once(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 400
    except urllib.error.HTTPError as err:
        return 200 <= err.code < 400
    except OSError:  # refused while starting, reset, timed out
        return False


def wait_ready(container: RunningContainer, probe: ReadinessProbe, started_at: float, *,
               timeout: float) -> tuple[float, int]:
    """Probe ``container`` as the kubelet does from ``started_at`` (monotonic); returns when it
    became Ready (monotonic) and how many probes failed first. AssertionError after
    ``timeout`` seconds."""
    deadline = started_at + timeout
    time.sleep(max(0.0, started_at + probe.initial_delay_s - time.monotonic()))
    failures = successes = 0
    while True:
        at = time.monotonic()
        try:
            url = container.url(probe.port) + probe.path
        except AssertionError:  # the port is not published yet: the pod has no address
            url = ""
        if url and _probe_once(url, probe.timeout_s):
            successes += 1
            if successes >= probe.success_threshold:
                return time.monotonic(), failures
        else:
            successes = 0
            failures += 1
        if at >= deadline:
            raise AssertionError(f"{container.raw.name} not Ready {timeout:.0f}s after its "
                                 f"start ({failures} failed probes of {probe.path})")
        time.sleep(max(0.0, at + probe.period_s - time.monotonic()))


@dataclass
class PodRestart:
    """One pod of the roll: when it got SIGTERM, exited, started again and became Ready
    (wall-clock seconds, comparable with the driver container's timestamps)."""

    name: str
    role_before: str
    sigterm_at: float = 0.0
    exited_at: float = 0.0
    started_at: float = 0.0
    ready_at: float = 0.0
    failed_probes: int = 0
    exit_code: int | None = None  # 0: stopped by itself; 137: SIGKILLed after the grace
    role_after: str = ""
    # The pod's log from SIGTERM to its exit, kept when it did not stop by itself: what its
    # graceful stop was waiting for.
    stop_log: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_s(self) -> float:
        return self.exited_at - self.sigterm_at

    @property
    def back_s(self) -> float:
        return self.ready_at - self.started_at


def restart_pod(container: RunningContainer, settings: PodSettings, record: PodRestart, *,
                ready_timeout: float) -> None:
    """Delete and recreate one pod: SIGTERM with the chart's grace period, start again on the
    same volume, wait until the chart's readiness probe passes. Fills ``record``."""
    record.sigterm_at = time.time()
    container.raw.stop(timeout=settings.grace_s)
    record.exited_at = time.time()
    container.raw.reload()
    record.exit_code = container.raw.attrs["State"]["ExitCode"]
    if record.exit_code != 0:
        record.stop_log = container.raw.logs(since=int(record.sigterm_at) - 1,
                                             until=int(record.exited_at) + 1).decode(
            "utf-8", "replace")[-20000:]
    container.raw.start()
    started = time.monotonic()
    record.started_at = time.time()
    ready, record.failed_probes = wait_ready(container, settings.probe, started,
                                             timeout=ready_timeout)
    record.ready_at = record.started_at + (ready - started)


# --- programs run by the driver container (argv[1] is a JSON object) -----------------------

LOAD = """
import asyncio, json, os, sys, time
from shardkv.client import Client
ARGS = json.loads(sys.argv[1])
samples, failures = [], []

async def writer(client, w, log):
    i = 0
    while not os.path.exists(ARGS["stop"]):
        i += 1
        key = f"roll-{w}-{i}"
        started, t0 = time.time(), time.monotonic()
        try:
            await client.put(key, f"value {i} of writer {w}")
        except Exception as exc:  # not acknowledged: may or may not be there
            failures.append(f"{key}: {exc!r}")
            continue
        took = time.monotonic() - t0
        samples.append((started, took))
        log.write(key + "\\n")
        log.flush()
        # Paced: a put at most every pace_s per writer, so that what is measured is the
        # pause a restart causes, not the queue of a saturated 2-core machine.
        await asyncio.sleep(max(0.0, ARGS["pace_s"] - took))

async def main():
    # The client's default retry policy: NOT_PRIMARY after a handoff refreshes the map and
    # goes to the new primary; a fenced primary's answers are retried with jittered backoff.
    async with Client(ARGS["coordinators"], timeout=20.0) as client:
        with open(ARGS["log"], "a") as log:
            await asyncio.gather(*(writer(client, w, log) for w in range(ARGS["writers"])))
    print(json.dumps({
        "failed": len(failures), "failures": failures[:10],
        # Every acknowledged put: [wall-clock start (s), latency (ms)].
        "samples": [[round(s, 3), round(t * 1000, 1)] for s, t in samples],
    }))

asyncio.run(main())
"""

# Reads back every key the load logged as acknowledged; the value follows from the key.
CHECK = """
import asyncio, json, sys
from shardkv.client import Client
ARGS = json.loads(sys.argv[1])

async def main():
    keys = open(ARGS["log"]).read().split()
    wrong = {}
    async with Client(ARGS["coordinators"], timeout=20.0) as client:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for key, item in zip(chunk, await client.mget(chunk)):
                w, i = key.split("-")[1:]
                want = f"value {i} of writer {w}"
                got = None if item is None else item.value.decode()
                if got != want:
                    wrong[key] = got
    print(json.dumps({"checked": len(keys), "wrong": dict(list(wrong.items())[:20]),
                      "lost": len(wrong)}))

asyncio.run(main())
"""


@dataclass(frozen=True)
class Latencies:
    """Put latencies (ms) of the puts that started in a window."""

    count: int
    max_ms: float
    p99_ms: float
    p50_ms: float

    @classmethod
    def of(cls, samples: list[list[float]], start: float = 0.0,
           end: float = float("inf")) -> Latencies:
        taken = sorted(ms for at, ms in samples if start <= at <= end)
        if not taken:
            return cls(0, 0.0, 0.0, 0.0)

        def quantile(q: float) -> float:
            return taken[min(len(taken) - 1, int(q * len(taken)))]

        return cls(len(taken), taken[-1], quantile(0.99), quantile(0.5))

    def __str__(self) -> str:
        return (f"{self.count} puts, max {self.max_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
                f"p50 {self.p50_ms:.0f} ms")
