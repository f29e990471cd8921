"""One storage adapter parameterised only by URI: local paths / file:// in tests, s3:// in production.

Writes go to a temporary key and are moved into place, so a reader never sees half an object.

S3 is configured from the environment, so production code passes only URIs:
  SAEFLOW_S3_ENDPOINT_URL   endpoint of an S3-compatible server (SeaweedFS, MinIO, ...); when set,
                            s3:// URIs use it with path-style addressing. Unset means AWS itself.
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any other botocore credential source)
                            are read by botocore itself; saeflow never logs or stores them.
Explicit storage_options (endpoint_url, key, secret, config_kwargs, ...) override the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
import uuid
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

SUPPORTED_SCHEMES = ("file", "s3", "memory")
S3_ENDPOINT_ENV = "SAEFLOW_S3_ENDPOINT_URL"
# Proxy variables the HTTP client reads; every AWS_* variable is botocore's (credentials, retries, CA bundle, ...).
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
_S3_CACHE_SIZE = 32
# An atomic write's temporary sibling: ".tmp-{uuid}-{name}.partial".
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".partial"
_S3_FILESYSTEMS: dict[str, AbstractFileSystem] = {}
_S3_LOCK = threading.Lock()


class StorageError(ValueError):
    """A storage URI or key breaks a rule (unknown scheme, escaping the root, ...)."""


def filesystem(uri: str, **storage_options: Any) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI; a bare path means the local filesystem."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(f"storage URI {uri!r}: scheme {scheme!r} is not one of {', '.join(SUPPORTED_SCHEMES)}")
    if scheme == "s3":
        return _s3_filesystem(uri, s3_storage_options(storage_options))
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    return fs, path


def _s3_filesystem(uri: str, options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    """One S3FileSystem per (process, options, botocore environment), reused by every call.

    A new S3FileSystem builds a new botocore client, about 200 ms; on a reused one a small read
    takes about 4 ms (bench/s3_ops.py, SeaweedFS on loopback). fsspec's own instance cache keys on
    the options only, so it would keep serving credentials the environment no longer holds: this
    cache also keys on every AWS_* and proxy variable and on the AWS config and credentials files'
    mtimes, and listings are never cached, so a reader always sees what another process wrote.
    """
    state = json.dumps([os.getpid(), options, _botocore_state()], sort_keys=True, default=repr)
    key = hashlib.sha256(state.encode()).hexdigest()  # a digest: the key holds no secret
    with _S3_LOCK:
        cached = _S3_FILESYSTEMS.get(key)
        if cached is None:
            if len(_S3_FILESYSTEMS) >= _S3_CACHE_SIZE:
                _S3_FILESYSTEMS.clear()
            cached, _ = fsspec.core.url_to_fs(uri, **options)
            _S3_FILESYSTEMS[key] = cached
    return cached, cached._strip_protocol(uri)


def _botocore_state() -> list[Any]:
    """What a botocore client is built from besides the options: AWS_*, proxy and saeflow variables, and the AWS files' mtimes."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_") or k in _PROXY_ENV or k == S3_ENDPOINT_ENV)
    files = []
    for variable, default in (("AWS_CONFIG_FILE", "~/.aws/config"), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")):
        path = os.path.expanduser(os.environ.get(variable) or default)
        try:
            files.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            files.append((path, None))
    return [env, files]


def s3_storage_options(explicit: dict[str, Any]) -> dict[str, Any]:
    """s3fs options: endpoint + path-style addressing from SAEFLOW_S3_ENDPOINT_URL, explicit ones winning."""
    # skip_instance_cache: _s3_filesystem caches instead (see why there); no listings cache, so a
    # listing never hides an object another process wrote since.
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    endpoint = os.environ.get(S3_ENDPOINT_ENV, "").strip()
    if endpoint:
        # S3-compatible servers (SeaweedFS, MinIO) serve buckets as paths, not as virtual hosts.
        options["endpoint_url"] = endpoint
        options["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    config_kwargs = {**options.get("config_kwargs", {}), **explicit.get("config_kwargs", {})}
    options.update(explicit)
    if config_kwargs:
        options["config_kwargs"] = config_kwargs
    return options


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
    if not _is_object_store(fs):
        # Object stores have no directories; makedirs there would try to create the bucket.
        fs.makedirs(parent, exist_ok=True)
    # ".partial", not the real suffix: a key a killed writer leaves behind never matches a reader's
    # glob such as DuckDB's `activations/*/*.parquet` (which, unlike pyarrow, reads dot-files).
    tmp_path = posixpath.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}{TEMP_SUFFIX}")
    try:
        with fs.open(tmp_path, "wb") as handle:
            handle.write(payload)
        # On S3 a move is copy + delete: readers see either no object or the whole new one.
        fs.mv(tmp_path, path)
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path)


def remove_partials(root: str, **storage_options: Any) -> int:
    """Delete the temporary files that killed writers left anywhere under root; returns how many.

    Only for a root whose writers are done (a harvest about to be committed): a writer still
    running there would lose its temporary file and fail, never publish half an object.
    """
    fs, path = filesystem(root, **storage_options)
    if not fs.exists(path):
        return 0
    stale = [key for key in fs.find(path) if _is_partial(posixpath.basename(key))]
    for key in stale:
        fs.rm(key)
    return len(stale)


def _is_partial(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "s3" in protocols


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


def absolute_root(root: str) -> str:
    """A storage root with relative local paths made absolute (workers may run elsewhere)."""
    return root if "://" in root else os.path.abspath(root)


STORAGE_ENV_KEYS = (S3_ENDPOINT_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")
"""Environment variables that configure storage access; forwarded to workers, never logged."""


def storage_env() -> dict[str, str]:
    """The storage variables set in this process, for handing to worker processes."""
    return {key: os.environ[key] for key in STORAGE_ENV_KEYS if key in os.environ}
