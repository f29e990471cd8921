"""The edits the stage compares with the baseline: add latents' directions, clamp latents, add a CAA vector.

'add' scales are relative to the hookpoint's typical norm (the mean ||x|| over the prompts' non-special
tokens, measured on the clean model and recorded in the manifest), so scale 1 adds a vector as long as
a typical activation; 'clamp' values are in the latent's own units; 'caa' multiplies the raw vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from infra.lm.hookpoints import Hookpoint, capture_activations
from infra.steer.generate import Edit
from infra.steer.plan import SteerPlan
from sae_core import SparseCoder
from sae_core.steering import add_vector, clamp_latents, latent_directions, steering_vector


@torch.no_grad()
def hookpoint_activations(model: nn.Module, hookpoint: Hookpoint, ids: list[int]) -> Tensor:
    """[S, D] clean activations of one sequence at the hookpoint."""
    device = next(model.parameters()).device
    ids_1S = torch.tensor([ids], dtype=torch.long, device=device)
    return capture_activations(model, [hookpoint], ids_1S)[hookpoint.name][0].float()


def typical_norm(model: nn.Module, hookpoint: Hookpoint, sequences: list[list[int]], specials: Tensor) -> float:
    """Mean ||x|| at the hookpoint over every non-special token of the sequences."""
    norms = []
    for ids in sequences:
        x_SD = hookpoint_activations(model, hookpoint, ids)
        keep_S = ~torch.isin(torch.tensor(ids), specials)
        norms.append(x_SD.norm(dim=-1).cpu()[keep_S])
    norms_T = torch.cat(norms)
    if len(norms_T) == 0:
        raise ValueError("every prompt token is special: no typical norm to scale steering by")
    return float(norms_T.mean())


def condition_edits(plan: SteerPlan, sae: SparseCoder | None, norm: float, caa_D: Tensor | None) -> dict[str, Edit]:
    """{condition name: edit} for the plan's conditions."""
    s, edits = plan.settings, {}
    if s.latents:
        vector_D = steering_vector(latent_directions(sae, s.latents).float().cpu(), torch.tensor(s.scales), norm)
        edits["add"] = lambda x_BSD, keep_BS, v=vector_D: add_vector(x_BSD, v, keep_BS)
    if s.clamp_latents:
        values_K = torch.tensor(s.clamp_values)
        edits["clamp"] = lambda x_BSD, keep_BS: clamp_latents(sae, x_BSD, s.clamp_latents, values_K, keep_BS)
    if s.positive_prompts:
        vector_D = caa_D * s.contrastive_scale
        edits["caa"] = lambda x_BSD, keep_BS, v=vector_D: add_vector(x_BSD, v, keep_BS)
    return edits


def describe(plan: SteerPlan, condition: str) -> str:
    """A one-line description of a condition for tables and the report."""
    s = plan.settings
    if condition == "add":
        return " + ".join(f"{scale:g} x latent {latent}" for latent, scale in zip(s.latents, s.scales)) + " (x typical norm)"
    if condition == "clamp":
        return ", ".join(f"latent {latent} := {value:g}" for latent, value in zip(s.clamp_latents, s.clamp_values))
    return f"{s.contrastive_scale:g} x CAA vector ({len(s.positive_prompts)} pairs)"
