"""`saeflow query`: print a sample of stored activations, or a sweep's results table.

Neither path imports torch, Prefect or Ray (the CLI answers in about a second); only decoding
token ids to text loads a tokenizer with transformers, offline, and falls back to ids.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class QueryUsageError(ValueError):
    """A query argument that cannot work (exit 2)."""


def check_target(uri: str, what: str) -> None:
    """Unknown schemes and an s3:// URI without credentials/endpoint, before botocore retries for a minute."""
    from flows.preflight import PreflightError, check_storage

    try:
        check_storage(uri, what, None, secret_hint=False)
    except PreflightError as error:
        raise QueryUsageError(str(error)) from None


def load_tokenizer_offline(ref_text: str) -> tuple[Any, str]:
    """(tokenizer or None, note): the manifest's tokenizer from local files only, never the network."""
    try:
        from transformers import AutoTokenizer

        from infra.lm.model_refs import ModelRef, model_cache_root

        ref = ModelRef.parse(ref_text)
        if ref.kind == "packaged":
            return AutoTokenizer.from_pretrained(model_cache_root() / ref.name), ""
        if ref.kind == "local":
            return AutoTokenizer.from_pretrained(ref.name), ""
        return AutoTokenizer.from_pretrained(ref.name, revision=ref.revision, local_files_only=True), ""
    except Exception as error:  # noqa: BLE001 - any failure only costs the text column
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"note: token text not shown, tokenizer {ref_text!r} not loadable offline ({reason[:120]}); ids only"


def token_texts(tokenizer: Any, ids: Any) -> list[str]:
    """Each id decoded alone, quoted so whitespace and newlines are visible."""
    return [repr(tokenizer.decode([int(i)])) for i in ids]


def query_activations(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds
    from tqdm import tqdm

    from infra.activations.store import activations_numpy, open_activations, read_manifest

    manifest = read_manifest(args.uri)
    hookpoint = args.hookpoint or manifest["hookpoints"][0]
    dataset = open_activations(args.uri, hookpoint)
    condition = None
    for column, value in (("seq_id", args.seq_id), ("token_id", args.token_id)):
        if value is not None:
            term = ds.field(column) == value
            condition = term if condition is None else condition & term
    tables, rows = [], 0
    fragments = list(dataset.get_fragments(filter=condition))
    for fragment in tqdm(fragments, desc="shards", unit="shard", disable=None, leave=False, file=sys.stderr):
        if rows >= args.limit:
            break
        table = fragment.to_table(filter=condition) if condition is not None else fragment.to_table()
        table = table.slice(0, args.limit - rows)
        tables.append(table)
        rows += table.num_rows
    print(f"harvest {args.uri}\nmodel {manifest.get('model')}  hookpoint {hookpoint}  d_model {manifest.get('d_model')}  "
          f"rows {manifest.get('num_rows')}  hookpoints {', '.join(manifest['hookpoints'])}")
    if not rows:
        print("no rows match")
        return EXIT_OK
    table = pa.concat_tables(tables)
    acts = activations_numpy(table).astype(np.float32)
    token_ids = table.column("token_id").to_numpy()
    columns: dict[str, Any] = {"seq_id": table.column("seq_id").to_numpy(), "pos": table.column("pos").to_numpy(),
                               "token_id": token_ids}
    tokenizer_ref = (manifest.get("token_spec") or {}).get("tokenizer") or manifest.get("model")
    tokenizer, note = load_tokenizer_offline(tokenizer_ref) if tokenizer_ref else (None, "note: no tokenizer recorded; ids only")
    if tokenizer is not None:
        columns["text"] = token_texts(tokenizer, token_ids)
    columns["norm"] = np.linalg.norm(acts, axis=1)
    if args.values:
        columns[f"first {args.values} values"] = [" ".join(f"{v:+.3f}" for v in row[: args.values]) for row in acts]
    print(pd.DataFrame(columns).to_string(index=False))
    if note:
        print(note, file=sys.stderr)
    return EXIT_OK


def read_results_table(uri: str):
    """A results.parquet as pandas (what infra.sweep.run.read_results does, without its torch import).

    Read with Arrow's threading off (no thread pool, no pre-buffering): the table is small, and a
    short-lived CLI process can abort at exit while an Arrow pool thread is being torn down
    ("terminate called without an active exception", apache/arrow#34314), seen once in the suite.
    """
    from infra.parquet_io import read_parquet

    return read_parquet(uri, use_threads=False).to_pandas(use_threads=False)


def query_results(args: argparse.Namespace) -> int:
    import pandas as pd

    frame = read_results_table(args.results)
    columns = list(frame.columns)
    if args.columns:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise QueryUsageError(f"--columns: unknown column(s) {unknown}; the table has {list(frame.columns)}")
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        print(frame[columns].to_string(index=False))
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    def fail(message: object, code: int) -> int:
        print(f"saeflow query: error: {message}", file=sys.stderr)
        return code

    if (args.uri is None) == (args.results is None):
        return fail("give either HARVEST_URI or --results RESULTS.parquet", EXIT_USAGE)
    if args.limit < 1:
        return fail(f"--limit {args.limit}: must be >= 1", EXIT_USAGE)
    if args.values < 0:
        return fail(f"--values {args.values}: must be >= 0 (activation values shown per row; 0 hides them)", EXIT_USAGE)
    try:
        check_target(args.results or args.uri, "--results" if args.results else "HARVEST_URI")
        return query_results(args) if args.results else query_activations(args)
    except QueryUsageError as error:
        return fail(error, EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 - storage, botocore, pyarrow: one line, never a traceback
        if isinstance(error, KeyError) and error.args:
            return fail(error.args[0], EXIT_FAILED)
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return fail(f"{type(error).__name__}: {lines[-1] if lines else ''}", EXIT_FAILED)
