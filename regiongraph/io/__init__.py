"""Atomic file writing, HDF5 shards with provenance, and the shared list of dropped videos."""

from regiongraph.io.atomic import atomic_path, write_csv, write_json, write_parquet
from regiongraph.io.dropped import DROPPED_COLUMNS, read_dropped, record_dropped
from regiongraph.io.shards import (
    ShardMismatchError,
    code_version,
    file_checksum,
    input_summary,
    open_shard,
    shard_settings,
    shard_writer,
)

__all__ = [
    "DROPPED_COLUMNS",
    "ShardMismatchError",
    "atomic_path",
    "code_version",
    "file_checksum",
    "input_summary",
    "open_shard",
    "read_dropped",
    "record_dropped",
    "shard_settings",
    "shard_writer",
    "write_csv",
    "write_json",
    "write_parquet",
]
