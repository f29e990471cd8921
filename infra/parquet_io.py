"""Parquet tables on any storage URI: one way to write (atomically) and read them."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import read_bytes, write_bytes_atomic


def parquet_bytes(table: pa.Table | pd.DataFrame, **write_options: Any) -> bytes:
    """A table (or a frame, index dropped) serialised as Parquet; write_options go to pq.write_table."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, **write_options)
    return sink.getvalue()


def write_parquet_atomic(uri: str, table: pa.Table | pd.DataFrame, **write_options: Any) -> None:
    """Write a table to uri so that a reader sees the whole file or none of it."""
    write_bytes_atomic(uri, parquet_bytes(table, **write_options))


def read_parquet(uri: str, use_threads: bool = True) -> pa.Table:
    """The Parquet file at uri as an Arrow table; use_threads=False keeps Arrow's thread pools (and pre-buffering) off."""
    return pq.read_table(io.BytesIO(read_bytes(uri)), use_threads=use_threads, pre_buffer=use_threads)
