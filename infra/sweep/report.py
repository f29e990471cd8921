"""Notes the sweep report puts above its table, so a number that looks fine cannot mislead."""

from __future__ import annotations

import pandas as pd

from infra.sweep.grid import SweepPlan


def data_note(plan: SweepPlan) -> str:
    """How often each SAE saw its data: the training stream silently loops over the harvest."""
    tokens = plan.total_steps * plan.batch_size
    epochs = plan.epochs(tokens)
    held_out = plan.held_out or f"{plan.eval_contexts} contexts"
    note = (f"Training data: {plan.train_rows} rows after holding out {held_out} ({plan.eval_contexts} asked); each SAE trained on "
            f"{tokens} tokens = **{epochs:.2f} epochs**")
    return note + (" (the stream looped: every row was seen more than once).\n\n" if epochs > 1 else ".\n\n")


def below_random(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose splice hurts the model more than random noise of the error's size (splice_eval's baseline)."""
    if "ce_loss_recovered" not in frame or "ce_loss_recovered_random" not in frame:
        return frame.iloc[:0]
    return frame[frame["ce_loss_recovered"] < frame["ce_loss_recovered_random"]]


def below_random_note(frame: pd.DataFrame) -> str:
    """A warning naming every SAE below its random-perturbation baseline; empty when there is none."""
    below = below_random(frame)
    if below.empty:
        return ""
    names = ", ".join(f"`{sae_id}`" for sae_id in below["sae_id"])
    return (f"**Warning: {len(below)} SAE(s) recover less CE loss than their random-perturbation baseline** "
            f"(ce_loss_recovered < ce_loss_recovered_random: the reconstruction error hurts the model more than "
            f"noise of the same norm): {names}.\n\n")
