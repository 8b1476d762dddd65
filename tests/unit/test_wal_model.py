"""The write-ahead log against a model: random appends, truncations, removals, restarts and
reopens (hypothesis), and the log must read back as the list the model keeps. Split from
test_wal.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.segment import list_segment_files
from shardkv.node.wal.write_ahead_log import (
    FsyncPolicy,
    WalOptions,
    WriteAheadLog,
)
from test_wal import entry

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("truncate"), st.floats(0, 1), st.just(False)),
        st.tuples(st.just("remove"), st.floats(0, 1.2), st.just(False)),
        st.tuples(st.just("restart"), st.integers(1, 50), st.just(False)),
        st.tuples(st.just("reopen"), st.integers(0, 2), st.just(False)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_the_log_behaves_like_a_list(tmp_path_factory: pytest.TempPathFactory, ops) -> None:  # type: ignore[no-untyped-def]
    """Any sequence of appends, truncations, removals, restarts and reopens (some after a torn
    write) leaves the log equal to a plain list of entries with the same operations."""
    directory = tmp_path_factory.mktemp("model")
    asyncio.run(_run_model(directory, ops))


async def _run_model(directory: Path, ops: list[tuple[str, float, bool]]) -> None:
    options = WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=1024)
    wal = await WriteAheadLog.open(directory, options)
    model: dict[int, WalEntry] = {}  # every entry the log should still hold, by LSN
    base, last, epoch = 0, 0, 1  # entries are base+1..last
    try:
        for op, arg, flag in ops:
            if op == "append":
                epoch += int(flag)
                batch = [entry(lsn, epoch, size=40) for lsn in range(last + 1, last + 1 + int(arg))]
                await wal.append_many(batch)
                model.update((e.lsn, e) for e in batch)
                last += len(batch)
            elif op == "truncate":
                cut = base + int((last - base) * arg)
                await wal.truncate_after(cut)
                model = {lsn: e for lsn, e in model.items() if lsn <= cut}
                last = cut
            elif op == "remove":
                target = base + 1 + int((last - base) * arg)
                await wal.remove_before(target)
                assert wal.first_lsn <= target or wal.first_lsn == 0
                base = max(base, (wal.first_lsn or last + 1) - 1)
                model = {lsn: e for lsn, e in model.items() if lsn > base}
            elif op == "restart":
                base = last = last + int(arg)
                await wal.restart_at(last + 1, epoch)
                model = {}
            else:
                await wal.close()
                if arg:  # a torn write at the end: garbage that never completed a record
                    ((_, _, newest),) = list_segment_files(directory)[-1:]
                    with newest.open("ab") as f:
                        f.write(b"\x07" * int(arg * 5) if arg == 1 else bytes(64))
                wal = await WriteAheadLog.open(directory, options)
            assert wal.last_lsn == last, op
            if model:
                assert wal.last_epoch == model[last].epoch, op
            assert wal.first_lsn == (base + 1 if last > base else 0), op
            assert list(wal.read_from(base + 1)) == [model[lsn] for lsn in sorted(model)], op
    finally:
        await wal.close()
