"""A node's part in backups (docs/backup.md): the export of a consistent view for
``shardkv backup create``, the import of restored rows for ``shardkv backup restore``, and
continuous WAL archiving (``--archive-to``)."""

from shardkv.node.backup.export import BackupExport
from shardkv.node.backup.importer import BackupImport
from shardkv.node.backup.wal_archiver import WalArchiver

__all__ = ["BackupExport", "BackupImport", "WalArchiver"]
