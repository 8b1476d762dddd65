"""A replica's frame of entries appended as one batch (``append_batch_nowait``): every
entry is checked before any is queued, one future stands for the whole batch, and a failed
group fails it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from shardkv.node.wal import segment_writer
from shardkv.node.wal.write_ahead_log import WalFailed, WriteAheadLog
from test_wal import SMALL, entry


async def test_a_batch_append_has_one_future_and_checks_every_entry_first(
    tmp_path: Path,
) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append(entry(1))
    with pytest.raises(ValueError, match="does not follow"):
        wal.append_batch_nowait([entry(2), entry(4)])
    with pytest.raises(ValueError, match="epoch"):
        wal.append_batch_nowait([entry(2, epoch=2), entry(3, epoch=1)])
    with pytest.raises(ValueError, match="empty"):
        wal.append_batch_nowait([])
    assert wal.last_lsn == 1  # a refused batch queued nothing
    # Big enough to roll segments over inside the batch.
    batch = [entry(i, epoch=2, size=600) for i in range(2, 12)]
    durable = wal.append_batch_nowait(batch)
    assert wal.last_lsn == 11
    await durable
    assert wal.durable_lsn == 11
    await wal.append(entry(12, epoch=2))
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert [e.lsn for e in reopened.read_from(1)] == list(range(1, 13))
    assert list(reopened.read_from(2))[:10] == batch
    await reopened.close()


async def test_a_failed_group_fails_a_batch_future(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = await WriteAheadLog.open(tmp_path)

    def broken_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(segment_writer, "fdatasync", broken_sync)
    with pytest.raises(WalFailed, match="Input/output error"):
        await wal.append_batch_nowait([entry(1), entry(2)])
    await wal.close()
