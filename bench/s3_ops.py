"""Small-object S3 operations through infra.storage: one reused client vs a new client per call (the old code).

Why it matters: every manifest, checkpoint state, metrics.json and marker a flow reads or writes
is one small S3 operation. infra.storage used to build a new S3FileSystem, so a new botocore
client, for every call; on a 1-CPU Ray worker node that dominated the multi-node test.
Same SeaweedFS server (loopback), same keys, same process, alternating order, median of --repeats.
Run: `.venv/bin/python -m bench.s3_ops [--keys 50] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import fsspec

from infra import storage
from tests.s3_server import seaweed_s3


def new_client_per_call(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """What infra.storage.filesystem did for s3:// before: a fresh S3FileSystem each call."""
    options = {**storage.s3_storage_options({}), "skip_instance_cache": True}
    options.pop("use_listings_cache")
    return fsspec.core.url_to_fs(uri, **options)


def flow_like_ops(uris: list[str], filesystem: Callable[[str], tuple[fsspec.AbstractFileSystem, str]]) -> None:
    """Per key what a flow does with a small artifact: does it exist, write it, read it back."""
    for uri in uris:
        fs, path = filesystem(uri)
        fs.exists(path)
        fs, path = filesystem(uri)
        fs.pipe_file(path, json.dumps({"uri": uri}).encode())
        fs, path = filesystem(uri)
        json.loads(fs.cat_file(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, seaweed_s3(tmp) as server:
        os.environ.update(server.env())
        uris = [server.uri("bench-s3-ops", f"key-{i}.json") for i in range(args.keys)]
        runs = [("new client per call (old)", new_client_per_call), ("reused client (infra.storage)", storage.filesystem)]
        seconds: dict[str, list[float]] = {name: [] for name, _ in runs}
        flow_like_ops(uris[:2], storage.filesystem)  # warm-up: imports, the server's first bucket access
        for repeat in range(args.repeats):
            for name, filesystem in runs if repeat % 2 == 0 else runs[::-1]:
                start = time.perf_counter()
                flow_like_ops(uris, filesystem)
                seconds[name].append(time.perf_counter() - start)
    ops = 3 * args.keys
    print(f"{ops} operations (exists, write, read of {args.keys} small keys), median of {args.repeats}:")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"  {name:32s} {median:7.2f} s  {1000 * median / ops:7.1f} ms/op")
    old, new = medians.values()
    print(f"  ratio: {old / new:.1f}x")


if __name__ == "__main__":
    main()
