"""Property test: random operation sequences against a model dict, with restarts and crashes.

The model is the specification in a few lines: key -> (value, version, expires_at), one LSN
counter, a clock. Every step checks the Store's answer against it, and after every step the
whole visible state (values *and* versions) must match. Reopen and crash steps check that
recovery reproduces exactly the acknowledged history, for both engines.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from shardkv.cluster.errors import InvalidArgument, NotFound, VersionMismatch
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

KEYS = st.sampled_from([b"a", b"b", b"c", b"ab", b"n", b"\xff"])
VALUES = st.one_of(
    st.binary(max_size=8),
    st.integers(-5, 5).map(lambda n: str(n).encode()),
    st.just(b"compressible " * 200),
)
TTLS = st.one_of(st.none(), st.sampled_from([1.0, 2.5, 10.0]))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Entry:
    value: bytes
    version: int
    expires_at: float | None


class StoreMachine(RuleBasedStateMachine):
    engine = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="store-prop-"))
        self.clock = Clock()
        self.config = StoreConfig(
            data_dir=self.dir,
            engine=self.engine,
            wal=WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=4096),
            ttl_sweep_interval_s=0,
            snapshot_wal_bytes=8192,  # automatic snapshots happen within a run
            retain_wal_entries=5,
            sqlite_flush_entries=4,
            sqlite_flush_interval_s=3600,
        )
        self.store = self.run(Store.open(self.config, clock=self.clock))
        self.model: dict[bytes, Entry] = {}
        self.lsn = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model ---------------------------------------------------------------------

    def visible(self, key: bytes) -> Entry | None:
        entry = self.model.get(key)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= self.clock.now):
            return None
        return entry

    def version(self, key: bytes) -> int:
        entry = self.visible(key)
        return 0 if entry is None else entry.version

    def expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock.now + ttl

    # -- rules ---------------------------------------------------------------------------

    @rule(
        key=KEYS,
        value=VALUES,
        ttl=TTLS,
        condition=st.sampled_from(["none", "absent", "current", "stale"]),
    )
    def put(self, key: bytes, value: bytes, ttl: float | None, condition: str) -> None:
        kwargs: dict = {"ttl": ttl}
        if condition == "absent":
            kwargs["if_absent"] = True
        elif condition == "current":
            kwargs["if_version"] = self.version(key)
        elif condition == "stale":
            kwargs["if_version"] = self.version(key) + 1
        should_fail = (condition == "absent" and self.visible(key) is not None) or (
            condition == "stale"
        )
        try:
            version = self.run(self.store.put(key, value, **kwargs))
        except VersionMismatch as exc:
            assert should_fail
            assert exc.details["current_version"] == self.version(key)
            return
        assert not should_fail
        self.lsn += 1
        assert version == self.lsn
        self.model[key] = Entry(value, version, self.expiry(ttl))

    @rule(key=KEYS, conditional=st.booleans())
    def delete(self, key: bytes, conditional: bool) -> None:
        current = self.version(key)
        result = self.run(self.store.delete(key, if_version=current if conditional else None))
        if current:
            self.lsn += 1
            assert (result.deleted, result.version) == (True, self.lsn)
            del self.model[key]
        else:
            assert (result.deleted, result.version) == (False, self.lsn)

    @rule(key=KEYS, delta=st.integers(-3, 3))
    def incr(self, key: bytes, delta: int) -> None:
        entry = self.visible(key)
        try:
            base = 0 if entry is None else int(entry.value.decode("ascii"))
            numeric = entry is None or entry.value.lstrip(b"-").isdigit()
        except (UnicodeDecodeError, ValueError):
            numeric = False
        try:
            value, version = self.run(self.store.incr(key, delta))
        except InvalidArgument:
            assert not numeric
            return
        assert numeric
        self.lsn += 1
        assert (value, version) == (base + delta, self.lsn)
        self.model[key] = Entry(
            str(value).encode(), version, None if entry is None else entry.expires_at
        )

    @rule(pairs=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4), ttl=TTLS)
    def mput(self, pairs: list[tuple[bytes, bytes]], ttl: float | None) -> None:
        version = self.run(self.store.mput(pairs, ttl=ttl))
        self.lsn += 1
        assert version == self.lsn
        for key, value in pairs:
            self.model[key] = Entry(value, version, self.expiry(ttl))

    @rule(keys=st.lists(KEYS, min_size=1, max_size=4))
    def mdelete(self, keys: list[bytes]) -> None:
        present = {key for key in keys if self.visible(key) is not None}
        deleted, version = self.run(self.store.mdelete(keys))
        if present:
            self.lsn += 1
        assert (deleted, version) == (len(present), self.lsn)
        for key in present:
            del self.model[key]

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(["put", "delete"]), KEYS, VALUES, st.booleans()),
            min_size=1,
            max_size=4,
        ),
        break_one=st.booleans(),
    )
    def batch(self, ops: list[tuple[str, bytes, bytes, bool]], break_one: bool) -> None:
        batch_ops = []
        for index, (kind, key, value, conditional) in enumerate(ops):
            if_version = self.version(key) if conditional else None
            if break_one and index == len(ops) - 1:
                if_version = self.version(key) + 7
            if kind == "put":
                batch_ops.append(BatchOp("put", key, value, if_version=if_version))
            else:
                batch_ops.append(BatchOp("delete", key, if_version=if_version))
        try:
            result = self.run(self.store.batch(batch_ops))
        except VersionMismatch as exc:
            assert break_one and exc.details["index"] == len(ops) - 1
            return
        assert not break_one
        writes = False
        for op in batch_ops:
            if op.op == "put":
                writes = True
                self.model[op.key] = Entry(op.value, self.lsn + 1, None)
            elif self.visible(op.key) is not None:
                writes = True
                del self.model[op.key]
        if writes:
            self.lsn += 1
        assert result.version == self.lsn

    @rule(key=KEYS, ttl=st.sampled_from([0.5, 3.0]))
    def expire(self, key: bytes, ttl: float) -> None:
        entry = self.visible(key)
        try:
            version = self.run(self.store.expire(key, ttl))
        except NotFound:
            assert entry is None
            return
        assert entry is not None
        self.lsn += 1
        assert version == self.lsn
        self.model[key] = Entry(entry.value, version, self.expiry(ttl))

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def sweep(self) -> None:
        expired = [k for k in self.model if self.visible(k) is None]
        swept = self.run(self.store.sweep_expired())
        assert swept == len(expired)
        if expired:
            self.lsn += 1
        for key in expired:
            del self.model[key]

    @rule()
    def snapshot(self) -> None:
        self.run(self.store.snapshot_now())

    @rule()
    def reopen(self) -> None:
        self.run(self.store.close())
        self.store = self.run(Store.open(self.config, clock=self.clock))

    @rule()
    def crash_and_recover(self) -> None:
        """Stop without the engine's final flush (a killed process; the WAL has everything
        acknowledged, since fsync=never still writes before answering)."""
        store = self.store
        self.run(store._sweeper.stop())
        self.run(store._snapshotter.close())
        self.run(store._pipeline.close())
        self.run(store.wal.close())
        if isinstance(store._engine, SqliteEngine):
            store._engine._timer.cancel()
            self.run(store._engine._conn.close())
        store._closed = True
        self.store = self.run(Store.open(self.config, clock=self.clock))

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        assert self.store.last_lsn == self.lsn
        page = self.run(self.store.scan(limit=100))
        got = {key: (item.value, item.version, item.expires_at) for key, item in page.items}
        want = {
            key: (entry.value, entry.version, entry.expires_at)
            for key in sorted(self.model)
            if (entry := self.visible(key)) is not None
        }
        assert got == want
        assert [key for key, _ in page.items] == sorted(want)


class SqliteStoreMachine(StoreMachine):
    engine = "sqlite"


_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryStore = StoreMachine.TestCase
TestMemoryStore.settings = _SETTINGS
TestSqliteStore = SqliteStoreMachine.TestCase
TestSqliteStore.settings = _SETTINGS
