"""The held-out split: whole documents, seeded, identical across hookpoints and models of one token spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from infra.activations.split import SeqSelection, SplitError, document_groups, held_out_ids, split_eval
from infra.activations.store import TOKENS_FILE, harvest_uri, write_manifest
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import TokenSpec, pack_tokens, token_table
from infra.parquet_io import write_parquet_atomic
from infra.storage import join
from infra.sweep.context_eval import context_rows
from tests.infra.fake_harvest import write_fake_harvest
from tests.infra.tiny_models import build_tiny_model

EOS, LETTERS = 1, "abcdefghijklmnopqrstuvwxyz"


class LetterTokenizer:
    """One token per character, 2 + the letter's index: a token says which document it came from."""

    bos_token_id = 0
    eos_token_id = EOS
    all_special_ids = [0, EOS]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [2 + LETTERS.index(c) for c in text]}


def letter_corpus(folder: Path, lengths: list[int]) -> str:
    """Documents of one repeated letter each, named so their sorted order is their index."""
    folder.mkdir(parents=True)
    for index, length in enumerate(lengths):
        (folder / f"{index:03d}.txt").write_text(LETTERS[index % 26] * length)
    return str(folder)


def token_harvest(root: Path, name: str, spec: TokenSpec) -> str:
    """A harvest holding only tokens.parquet and a manifest (no activations): what split_eval reads."""
    tokens = pack_tokens(spec, LetterTokenizer())
    harvest = harvest_uri(str(root), name)
    write_parquet_atomic(join(harvest, TOKENS_FILE), token_table(tokens))
    write_manifest(harvest, {"harvest_id": name, "hookpoints": [], "context_length": spec.context_length,
                             "num_contexts": spec.num_contexts, "token_spec": spec.to_dict(), "shards": []})
    return harvest


def documents_of(tokens_table, seq_ids) -> set[int]:
    frame = tokens_table.to_pandas()
    return set(frame.loc[frame["seq_id"].isin(list(seq_ids)), "doc_id"])


@pytest.fixture
def varied(tmp_path) -> tuple[str, TokenSpec]:
    lengths = np.random.default_rng(1).integers(3, 60, size=80).tolist()  # documents of 0.2 to 4 contexts; pack_tokens reads ~2x what it keeps
    spec = TokenSpec(source=letter_corpus(tmp_path / "docs", lengths), tokenizer="letters", context_length=16, num_tokens=16 * 40)
    return token_harvest(tmp_path, "letters-a", spec), spec


def test_packing_records_each_tokens_document(varied):
    harvest, _ = varied
    frame = pq.read_table(join(harvest, TOKENS_FILE)).to_pandas()
    body = frame[~frame["special"]]
    assert (body["doc_id"] % 26 == body["token_id"] - 2).all(), "a letter token carries the document it came from"
    eos = frame[frame["token_id"] == EOS]
    previous = frame.set_index(["seq_id", "pos"])["token_id"].reindex(list(zip(eos["seq_id"], eos["pos"] - 1)))
    assert ((previous.to_numpy() - 2 == eos["doc_id"].to_numpy() % 26) | (eos["pos"].to_numpy() == 1)).all(), "an EOS ends its document"
    assert (frame.groupby("seq_id")["doc_id"].apply(lambda d: d.is_monotonic_increasing)).all()


def test_no_document_on_both_sides_and_the_two_sides_cover_every_context(varied):
    harvest, spec = varied
    table = pq.read_table(join(harvest, TOKENS_FILE))
    for eval_contexts in (1, 4, 9):
        train, held = split_eval(harvest, eval_contexts)
        assert train == SeqSelection(held.ids, complement=True, rule="documents") and held.rule == "documents"
        assert len(held.ids) == eval_contexts, "first fit over small documents holds out exactly eval_contexts"
        trained = [i for i in range(spec.num_contexts) if train.mask(np.array([i]))[0]]
        assert sorted(trained + list(held.ids)) == list(range(spec.num_contexts)), "disjoint, and together every context"
        assert not documents_of(table, held.ids) & documents_of(table, trained), eval_contexts
    assert split_eval(harvest, 4) == split_eval(harvest, 4), "deterministic"


def test_the_old_rule_would_have_split_a_document(varied):
    """Why the split changed: the last contexts of the sorted corpus continue the document before them."""
    harvest, spec = varied
    table = pq.read_table(join(harvest, TOKENS_FILE))
    last = range(spec.num_contexts - 4, spec.num_contexts)
    assert documents_of(table, last) & documents_of(table, range(spec.num_contexts - 4))


def test_identical_held_out_ids_for_harvests_of_one_token_spec(varied, tmp_path):
    harvest, spec = varied
    again = token_harvest(tmp_path / "other-model", "letters-b", spec)
    assert split_eval(harvest, 6) == split_eval(again, 6)
    reseeded = token_harvest(tmp_path / "reseeded", "letters-c", TokenSpec(**{**spec.to_dict(), "seed": 1}))
    assert split_eval(reseeded, 6)[1] != split_eval(harvest, 6)[1], "the token spec's seed draws another split"


def test_two_models_and_two_hookpoints_evaluate_on_the_same_contexts(tmp_path):
    models = [build_tiny_model(family, tmp_path / family) for family in ("gpt2", "llama")]
    words = ["the", "river", "ran", "past", "an", "old", "mill", "and", "into", "town"]
    rng, docs = np.random.default_rng(0), tmp_path / "docs"
    docs.mkdir()
    for index in range(60):  # short documents, so a few-context split can be made of whole ones
        (docs / f"{index:03d}.txt").write_text(" ".join(rng.choice(words, size=int(rng.integers(4, 30)))))
    spec = TokenSpec(source=str(docs), tokenizer=str(models[0]), context_length=16, num_tokens=16 * 24)
    hookpoints = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    seen = []
    for model in models:
        job = plan_harvest(str(model), hookpoints, spec, str(tmp_path / "root"), dtype="float32", contexts_per_shard=8)
        harvest_in_process(job, device="cpu")
        held = split_eval(job.harvest, 5)[1]
        seen.append(held)
        for hookpoint in hookpoints:
            seq_N, _ = context_rows(job.harvest, hookpoint, held)
            assert set(seq_N.tolist()) == set(held.ids), (model.name, hookpoint)
    assert seen[0] == seen[1] and len(seen[0].ids) >= 5


def test_a_corpus_of_one_long_document_falls_back_to_runs_of_contiguous_text(tmp_path):
    spec = TokenSpec(source=letter_corpus(tmp_path / "novel", [2000]), tokenizer="letters", context_length=16, num_tokens=16 * 40)
    harvest = token_harvest(tmp_path, "letters-novel", spec)
    train, held = split_eval(harvest, 6)
    assert held.rule == train.rule == "text runs" and 6 <= len(held.ids) < 12
    chunk_N = pq.read_table(join(harvest, TOKENS_FILE)).column("chunk_id").to_numpy()[::16]
    held_chunks = set(chunk_N[list(held.ids)].tolist())
    trained_chunks = set(chunk_N.tolist()) - held_chunks
    assert not {c + 1 for c in held_chunks} & trained_chunks and not {c - 1 for c in held_chunks} & trained_chunks, \
        "no held-out context continues, or is continued by, a training context"


def test_document_groups_and_first_fit():
    first_N, last_N = np.array([0, 0, 2, 3, 3, 5]), np.array([0, 1, 2, 3, 4, 5])
    groups_N = document_groups(first_N, last_N)
    assert groups_N.tolist() == [0, 0, 1, 2, 2, 3]
    draws = set()
    for seed in range(8):
        held = held_out_ids(groups_N, 3, seed)
        groups = set(groups_N[held].tolist())
        assert sorted(held.tolist()) == np.flatnonzero(np.isin(groups_N, list(groups))).tolist(), "whole groups only"
        assert 3 <= len(held) < 3 + 2, "at least eval_contexts, overshooting by less than the largest group"
        draws.add(frozenset(groups))
    assert len(draws) > 1, "the seed draws the groups"
    held = held_out_ids(np.array([0, 0, 0, 1, 1, 1]), 2, 0)
    assert len(held) == 3, "no group fits 2 exactly: the smallest overshoot is taken"
    with pytest.raises(SplitError, match="not in corpus order"):
        document_groups(np.array([3, 1]), np.array([3, 1]))


def test_bad_splits_are_one_line(tmp_path, varied):
    harvest, _ = varied
    with pytest.raises(SplitError, match=r"eval_contexts=40 is invalid: an integer in 1\.\.39 \(the harvest has 40 contexts\)"):
        split_eval(harvest, 40)
    # 159 letters + EOS = exactly 10 chunks of 15: every chunk is kept, so the whole harvest is one run of text.
    no_gap = TokenSpec(source=letter_corpus(tmp_path / "one", [159]), tokenizer="letters", context_length=16, num_tokens=16 * 10)
    with pytest.raises(SplitError, match=r"letters-one: holding out eval_contexts=2 contexts leaves none to train on \(its 10 contexts form 1 run"):
        split_eval(token_harvest(tmp_path, "letters-one", no_gap), 2)
    fake, _ = write_fake_harvest(str(tmp_path / "fake"))
    pq.write_table(pq.read_table(join(fake, TOKENS_FILE)).drop_columns(["doc_id"]), join(fake, TOKENS_FILE))
    with pytest.raises(SplitError, match=r"tokens\.parquet: no doc_id column, so the held-out split cannot keep documents whole"):
        split_eval(fake, 2)
