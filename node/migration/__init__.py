"""Online migration, the node's side (docs/resharding.md): export of moving arcs (source),
import with an LSN floor (target), the write fence, and cleaning after the flip."""

from shardkv.node.migration.service import MigrationService

__all__ = ["MigrationService"]
