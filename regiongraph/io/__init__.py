"""Atomic file writing, HDF5 shards with provenance, and the lists of dropped videos."""

from regiongraph.io.atomic import atomic_path, write_csv, write_json, write_parquet
from regiongraph.io.dropped import DROPPED_COLUMNS, merge_dropped, read_dropped, summarise_dropped
from regiongraph.io.shards import (
    DropReport,
    ShardMismatchError,
    code_version,
    content_digest,
    file_checksum,
    input_summary,
    open_shard,
    record_shard_drops,
    shard_digest,
    shard_drops,
    shard_settings,
    shard_writer,
)

__all__ = [
    "DROPPED_COLUMNS",
    "DropReport",
    "ShardMismatchError",
    "atomic_path",
    "code_version",
    "content_digest",
    "file_checksum",
    "input_summary",
    "open_shard",
    "merge_dropped",
    "read_dropped",
    "record_shard_drops",
    "shard_digest",
    "shard_drops",
    "shard_settings",
    "shard_writer",
    "summarise_dropped",
    "write_csv",
    "write_json",
    "write_parquet",
]
