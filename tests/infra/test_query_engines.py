"""The README's DuckDB and Polars snippets, run verbatim on a real harvest of a tiny model.

The snippets are read out of README.md ("### Query with DuckDB / Polars"), so the README cannot
drift from what works; only the harvest path and the hookpoint name are substituted. Results
are checked against the manifest, the pyarrow reader (open_activations) and the tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from infra.activations.store import (
    MANIFEST_FILE,
    HarvestFormatError,
    activations_numpy,
    open_activations,
    read_manifest,
    read_tokens_table,
)
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec, tokens_from_table
from tests.infra.tiny_models import CORPUS, D_MODEL, N_LAYERS, build_tiny_model

README = Path(__file__).resolve().parents[2] / "README.md"
SOURCE = str(CORPUS.parent) if CORPUS.is_file() else BUILTIN_PYDOC
CONTEXT, CONTEXTS, PER_SHARD = 16, 8, 3  # three shards, the last one short
HOOKPOINT = f"blocks.{N_LAYERS - 1}.hook_resid_post"
HOOKPOINTS = ["blocks.0.hook_resid_pre", HOOKPOINT]
README_HARVEST, README_HOOKPOINT, README_SEQ = '"./artifacts/activations/<harvest_id>"', "blocks.6.hook_resid_post", 3


def readme_snippets() -> dict[str, str]:
    """The python blocks of the README's DuckDB / Polars subsection, keyed by the engine they import."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Query with DuckDB / Polars", 1)[1]
    section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.M)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    snippets = {re.match(r"import (\w+)", block).group(1): block for block in blocks}
    assert set(snippets) == {"duckdb", "polars"}, sorted(snippets)
    return snippets


def run_snippet(code: str, harvest: str) -> dict:
    assert README_HARVEST in code and README_HOOKPOINT in code
    code = code.replace(README_HARVEST, repr(harvest)).replace(README_HOOKPOINT, HOOKPOINT)
    scope: dict = {}
    exec(compile(code, f"README.md:{code.splitlines()[0]}", "exec"), scope)  # noqa: S102 - our own README
    return scope


@pytest.fixture(scope="module")
def harvest(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("query")
    model = build_tiny_model("gpt2", base / "gpt2")
    spec = TokenSpec(source=SOURCE, tokenizer=str(model), context_length=CONTEXT, num_tokens=CONTEXTS * CONTEXT)
    job = plan_harvest(str(model), HOOKPOINTS, spec, str(base / "root"), contexts_per_shard=PER_SHARD, batch_contexts=4)
    harvest_in_process(job, device="cpu")
    return job.harvest


def expected_context(harvest: str) -> tuple[np.ndarray, np.ndarray]:
    """(token_id [S], activation [S, D] float16) of context README_SEQ, via pyarrow and the manifest's files."""
    table = open_activations(harvest, HOOKPOINT).to_table(filter=ds.field("seq_id") == README_SEQ).sort_by("pos")
    return table.column("token_id").to_numpy(), activations_numpy(table)


def test_layout_keeps_the_glob_to_shards(harvest):
    manifest = read_manifest(harvest)
    assert manifest["format_version"] == 3 and manifest["tokens_file"] == "tokens.parquet"
    paths = sorted(str(p.relative_to(harvest)) for p in Path(harvest).rglob("*.parquet"))
    listed = sorted(entry["path"] for shard in manifest["shards"] for entry in shard["files"].values())
    assert paths == sorted([*listed, "tokens.parquet"])
    assert all(re.fullmatch(r"activations/hookpoint=[\w.]+/part-\d{5}\.parquet", path) for path in listed), listed


def test_duckdb_snippets(harvest):
    scope = run_snippet(readme_snippets()["duckdb"], harvest)
    manifest = read_manifest(harvest)
    counts = scope["counts"]
    assert counts["hookpoint"].tolist() == sorted(HOOKPOINTS)
    assert counts["rows"].tolist() == [manifest["num_rows"]] * len(HOOKPOINTS)
    for hookpoint, rows in zip(counts["hookpoint"], counts["rows"]):
        assert rows == sum(shard["files"][hookpoint]["rows"] for shard in manifest["shards"])

    token_S, acts_SD = expected_context(harvest)
    context = scope["context"]
    assert context["pos"].tolist() == list(range(CONTEXT)) and set(context["seq_id"]) == {README_SEQ}
    assert context["token_id"].tolist() == token_S.tolist()
    got_SD = np.stack(context["activation"].to_numpy()).astype(np.float32)
    assert got_SD.shape == (CONTEXT, D_MODEL)
    assert np.array_equal(got_SD, acts_SD.astype(np.float32)), "DuckDB's float16 -> float decode differs from pyarrow's"

    tokens_NS = tokens_from_table(read_tokens_table(harvest)).token_ids_NS
    joined = scope["joined"]
    assert len(joined) == CONTEXTS * (CONTEXT - 1), "every position but each context's last has a next token"
    seq, pos = joined["seq_id"].to_numpy(), joined["pos"].to_numpy()
    assert np.array_equal(joined["token_id"].to_numpy(), tokens_NS[seq, pos])
    assert np.array_equal(joined["next_token_id"].to_numpy(), tokens_NS[seq, pos + 1])
    in_context = seq == README_SEQ
    assert np.array_equal(np.stack(joined["activation"].to_numpy()[in_context]).astype(np.float32), acts_SD[:-1].astype(np.float32))


def test_polars_snippets(harvest):
    import polars as pl

    scope = run_snippet(readme_snippets()["polars"], harvest)
    manifest = read_manifest(harvest)
    counts = scope["counts"]
    assert counts["hookpoint"].to_list() == sorted(HOOKPOINTS)
    assert counts["rows"].to_list() == [manifest["num_rows"]] * len(HOOKPOINTS)

    token_S, acts_SD = expected_context(harvest)
    context, x = scope["context"], scope["x"]
    assert context["pos"].to_list() == list(range(CONTEXT)) and context["seq_id"].unique().to_list() == [README_SEQ]
    assert context["token_id"].to_list() == token_S.tolist()
    assert context.schema["activation"] == pl.Array(pl.Float16, D_MODEL)
    assert x.dtype == np.float16 and x.shape == (CONTEXT, D_MODEL)
    assert np.array_equal(x, acts_SD)

    tokens_NS = tokens_from_table(read_tokens_table(harvest)).token_ids_NS
    joined = scope["joined"]
    assert joined.height == CONTEXTS * (CONTEXT - 1)
    seq, pos = joined["seq_id"].to_numpy(), joined["pos"].to_numpy()
    assert np.array_equal(joined["token_id"].to_numpy(), tokens_NS[seq, pos])
    assert np.array_equal(joined["next_token_id"].to_numpy(), tokens_NS[seq, pos + 1])
    assert np.array_equal(joined.filter(pl.col("seq_id") == README_SEQ)["activation"].to_numpy(), acts_SD[:-1])


def test_leftover_temporary_file_does_not_break_the_glob(harvest, tmp_path):
    """A writer killed mid-upload leaves a `.tmp-...partial` key; DuckDB globs dot-files, so it must not end in .parquet."""

    from infra.storage import write_bytes_atomic

    folder = Path(harvest) / "activations" / f"hookpoint={HOOKPOINT}"
    leftover = folder / ".tmp-0123-part-00099.parquet.partial"
    leftover.write_bytes(b"half an upload")
    try:
        code = readme_snippets()["duckdb"]
        assert run_snippet(code, harvest)["counts"]["rows"].tolist() == [CONTEXTS * CONTEXT] * len(HOOKPOINTS)
        # and the atomic writer's own temporary keys are of that shape
        from fsspec.implementations.local import LocalFileSystem

        moved = []
        original = LocalFileSystem.mv

        def spy(self, path1, path2, **kwargs):
            moved.append(Path(path1).name)
            return original(self, path1, path2, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LocalFileSystem, "mv", spy)
            write_bytes_atomic(str(tmp_path / "x.parquet"), b"x")
        assert len(moved) == 1 and moved[0].startswith(".tmp-") and moved[0].endswith(".parquet.partial"), moved
    finally:
        leftover.unlink()


@pytest.mark.parametrize(("version", "rule"), [(1, "_tokens.parquet beside the hookpoint= folders"), (2, "tokens.parquet has no doc_id column")])
def test_old_layout_is_refused_by_name(harvest, tmp_path, version, rule):
    old = tmp_path / "activations" / "old-layout-0123"
    old.mkdir(parents=True)
    manifest = json.loads((Path(harvest) / MANIFEST_FILE).read_text())
    (old / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": version}))
    for read in (read_manifest, open_activations):
        with pytest.raises(HarvestFormatError) as caught:
            read(str(old))
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{old}:") and "re-harvest" in message and rule in message
