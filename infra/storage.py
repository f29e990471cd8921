"""One storage adapter parameterised only by URI: local paths / file:// in tests, s3:// in production.

Writes go to a temporary key and are moved into place, so a reader never sees half an object.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

SUPPORTED_SCHEMES = ("file", "s3", "memory")


class StorageError(ValueError):
    """A storage URI or key breaks a rule (unknown scheme, escaping the root, ...)."""


def filesystem(uri: str, **storage_options: Any) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI; a bare path means the local filesystem."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(f"storage URI {uri!r}: scheme {scheme!r} is not one of {', '.join(SUPPORTED_SCHEMES)}")
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    return fs, path


def join(root: str, *parts: str) -> str:
    """root/part/... refusing parts that would climb out of root ('..', absolute paths)."""
    for part in parts:
        pieces = part.split("/")
        if part.startswith("/") or ".." in pieces:
            raise StorageError(f"key {part!r} under {root!r} tries to escape the storage root")
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def write_bytes_atomic(uri: str, payload: bytes, **storage_options: Any) -> None:
    """Write payload to a temporary sibling key, then move it onto uri."""
    fs, path = filesystem(uri, **storage_options)
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    tmp_path = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    try:
        with fs.open(tmp_path, "wb") as handle:
            handle.write(payload)
        fs.mv(tmp_path, path)
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path)


def read_bytes(uri: str, **storage_options: Any) -> bytes:
    """Whole object as bytes; FileNotFoundError names the URI."""
    fs, path = filesystem(uri, **storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{uri}: no such object") from error


def write_json_atomic(uri: str, value: Any, **storage_options: Any) -> None:
    """Pretty JSON, atomically."""
    write_bytes_atomic(uri, json.dumps(value, indent=2, sort_keys=True).encode(), **storage_options)


def read_json(uri: str, **storage_options: Any) -> Any:
    """Parse a JSON object; a decode error names the URI."""
    raw = read_bytes(uri, **storage_options)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{uri}: not valid JSON ({error})") from error


def exists(uri: str, **storage_options: Any) -> bool:
    """Whether an object exists at uri."""
    fs, path = filesystem(uri, **storage_options)
    return fs.exists(path)
