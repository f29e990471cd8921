"""Row alignment: harvests on one token spec align; different token specs fail naming the shard."""

from __future__ import annotations

import pytest

from infra.activations.alignment import AlignmentError, check_aligned
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from tests.infra.tiny_models import build_tiny_model

HOOKPOINT = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("align")
    return build_tiny_model("gpt2", base / "a", seed=0), build_tiny_model("gpt2", base / "b", seed=1)


def harvest(model, root, tokenizer, seed=0):
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(tokenizer), context_length=16, num_tokens=16 * 8, seed=seed)
    job = plan_harvest(str(model), [HOOKPOINT], spec, str(root), contexts_per_shard=4)
    harvest_in_process(job, device="cpu")
    return job.harvest


def test_two_models_on_one_token_spec_are_aligned(models, tmp_path):
    a, b = models
    assert check_aligned([harvest(a, tmp_path, a), harvest(b, tmp_path, a)], HOOKPOINT) == {"sources": 2, "shards": 2, "rows": 128}


def test_different_token_specs_are_misaligned(models, tmp_path):
    a, b = models
    with pytest.raises(AlignmentError, match=r"part-00000\.parquet: column seq_id|part-00000\.parquet: column token_id"):
        check_aligned([harvest(a, tmp_path, a, seed=0), harvest(b, tmp_path, a, seed=7)], HOOKPOINT)


def test_one_harvest_is_not_a_pair(models, tmp_path):
    with pytest.raises(AlignmentError, match="at least two harvests"):
        check_aligned([harvest(models[0], tmp_path, models[0])], HOOKPOINT)
