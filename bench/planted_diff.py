"""Does the crosscoder diff find a change we planted? (issue 15: "the demo's diff tells a true story")

A small GPT-NeoX (the demo's shape: d_model 64, 2 layers) is trained on pydoc text in which a trigger
(" Moreover,") appears at random word boundaries with ordinary text after it: model A. Model B is A
fine-tuned on the same text except that after each trigger, for the rest of the sentence (at most
--span words), every word is followed by a marker (" ~"): B must carry an "in marker mode" state that A
lacks. With --hold > 0, B's fine-tune learns only the tokens inside the spans and holds its blocks.1
residual to A's off them (squared difference over A's centred variance, times --hold), so that B differs from A only where the
planted behaviour acts; without it every weight drifts and B - A is as large everywhere (A is far from
converged at 120 steps).

Both models are then read at blocks.1.hook_resid_post on held-out A-style text (triggers, no markers:
the inputs are ordinary for A, so any B-only direction is B's own), a BatchTopK crosscoder is trained
as the diff flow does (sae_core, centred-variance scaling) and the latents are classified as the diff
flow classifies them (relative decoder norm, then latent scaling). Printed: class counts, explained
variance per source, and for each B-only latent its precision (share of its activation mass on planted
positions: the trigger and the span after it). --synthetic S replaces B's activations by A's plus a
fixed random direction of S x A's centred std on the planted positions: a control with a known answer.

Run: `.venv/bin/python -m bench.planted_diff [--hold 10] [--synthetic 0.5] [--k 32] ...`
Findings (2 cores, Dec 2026) are in docs/BENCHMARKS.md ("Planted diff").
"""

from __future__ import annotations

import argparse
import pydoc_data.topics
import random
import time
from collections import Counter

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from infra.lm.models import load_tokenizer
from sae_core import SaeTrainer, TrainConfig
from sae_core.config import scaled_dead_window
from sae_core.crosscoder import build_crosscoder
from sae_core.crosscoder_config import CrosscoderConfig
from sae_core.diffing import classify_with_scaling, diff_summary, relative_decoder_norm

CONTEXT, BATCH, LAYER = 64, 8, 1
SENTENCE_END = (".", ":", "Ċ")  # token pieces that close a planted span (Ċ: byte-level newline)


def plant(doc: str, rng: random.Random, args: argparse.Namespace, marker_mode: bool) -> str:
    """Insert the trigger after random words; in marker mode, mark each following word of its sentence."""
    out: list[str] = []
    left = 0
    for word in doc.split(" "):
        if left > 0:
            left -= 1
            if marker_mode and word and "\n" not in word:
                word += args.marker
            if word.endswith((".", ":")) or "\n" in word:
                left = 0
        out.append(word)
        if left == 0 and rng.random() < args.rate:
            out[-1] += args.trigger
            left = args.span
    return " ".join(out)


def contexts_NS(tokenizer, args: argparse.Namespace, marker_mode: bool) -> torch.Tensor:
    """The planted corpus, tokenized, joined with EOS and cut into contexts (corpus order)."""
    rng = random.Random(args.seed)
    ids: list[int] = []
    for key in sorted(pydoc_data.topics.topics):
        ids += tokenizer(plant(pydoc_data.topics.topics[key], rng, args, marker_mode), add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // CONTEXT
    return torch.tensor(ids[: n * CONTEXT]).view(n, CONTEXT)


def planted_NS(ids_NS: torch.Tensor, trigger_ids: list[int], stop_ids: set[int]) -> torch.Tensor:
    """True on each trigger and on the tokens after it up to the sentence's end: where B's mode is on."""
    mask_NS = torch.zeros_like(ids_NS, dtype=torch.bool)
    width = len(trigger_ids)
    for i, row in enumerate(ids_NS.tolist()):
        for j in range(len(row) - width + 1):
            if row[j : j + width] == trigger_ids:
                end = j + width
                while end < len(row) and row[end] not in stop_ids:
                    end += 1
                mask_NS[i, j : end + 1] = True
    return mask_NS


def resid(model: GPTNeoXForCausalLM, ids_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(blocks.LAYER resid_post [N, S, D], logits) of one forward pass."""
    out: list[torch.Tensor] = []
    hook = model.gpt_neox.layers[LAYER].register_forward_hook(lambda mod, inp, o: out.append(o[0] if isinstance(o, tuple) else o))
    try:
        logits = model(input_ids=ids_NS).logits
    finally:
        hook.remove()
    return out[0], logits


def train_pair(tokenizer, args: argparse.Namespace) -> tuple[GPTNeoXForCausalLM, GPTNeoXForCausalLM, torch.Tensor]:
    """(A, B, A-style held-out contexts)."""
    torch.manual_seed(args.seed)
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                           max_position_embeddings=128, rotary_pct=0.25, bos_token_id=tokenizer.bos_token_id or 0,
                           eos_token_id=tokenizer.eos_token_id or 0)
    model = GPTNeoXForCausalLM(config)
    plain_NS, marked_NS = contexts_NS(tokenizer, args, False), contexts_NS(tokenizer, args, True)
    generator = torch.Generator().manual_seed(args.seed)
    order_plain, order_marked = torch.randperm(len(plain_NS), generator=generator), torch.randperm(len(marked_NS), generator=generator)
    held_out = order_plain[-args.diff_contexts :]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(args.a_steps):
        batch_BS = plain_NS[order_plain[step * BATCH : (step + 1) * BATCH]]
        model(input_ids=batch_BS, labels=batch_BS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    base = GPTNeoXForCausalLM(config)
    base.load_state_dict(model.state_dict())
    base.eval()
    stop_ids = {i for i in range(len(tokenizer)) if any(c in tokenizer.convert_ids_to_tokens(i) for c in SENTENCE_END)}
    trigger_ids = tokenizer(args.trigger, add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.b_lr)
    for step in range(args.b_steps):
        batch_BS = marked_NS[order_marked[(step * BATCH) % len(order_marked) :][:BATCH]]
        span_BS = planted_NS(batch_BS, trigger_ids, stop_ids)
        h_B_BSD, logits_BSV = resid(model, batch_BS)
        # --learn spans: with the hold, B learns only the planted spans (tokens inside them, predicted from
        # inside them) and off them its residual is tied to A's; it then over-predicts the marker everywhere.
        # --learn all: every token's loss too, so B also learns where NOT to put the marker.
        only_spans = args.hold > 0 and args.learn == "spans"
        targets_BS = span_BS[:, 1:] & span_BS[:, :-1] if only_spans else torch.ones_like(span_BS[:, 1:])
        loss = torch.nn.functional.cross_entropy(logits_BSV[:, :-1][targets_BS], batch_BS[:, 1:][targets_BS])
        if args.hold > 0:
            with torch.no_grad():
                h_A_BSD, _ = resid(base, batch_BS)
            variance = ((h_A_BSD - h_A_BSD.mean((0, 1))) ** 2).sum(-1).mean()
            loss = loss + args.hold * ((h_B_BSD - h_A_BSD)[~span_BS] ** 2).sum(-1).mean() / variance
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return base, model.eval(), plain_NS[held_out]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", default=" Moreover,")
    parser.add_argument("--marker", default=" ~")
    parser.add_argument("--rate", type=float, default=0.05, help="Trigger insertions per word.")
    parser.add_argument("--span", type=int, default=12, help="Most words marked after a trigger.")
    parser.add_argument("--a_steps", type=int, default=120)
    parser.add_argument("--b_steps", type=int, default=80)
    parser.add_argument("--b_lr", type=float, default=3e-3)
    parser.add_argument("--hold", type=float, default=10.0, help="Weight of B's residual held to A's off the planted spans.")
    parser.add_argument("--learn", choices=["spans", "all"], default="spans", help="With --hold: B's loss on span tokens only, or on all.")
    parser.add_argument("--diff_contexts", type=int, default=128)
    parser.add_argument("--expansion", type=float, default=4.0)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train_tokens", type=int, default=512 * 300)
    parser.add_argument("--synthetic", type=float, default=0.0, help="Control: B = A + this x std along one direction on planted positions.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    tokenizer = load_tokenizer("smollm2-135m")
    with torch.enable_grad():
        model_a, model_b, ids_NS = train_pair(tokenizer, args)
    trained = time.perf_counter() - started
    stop_ids = {i for i in range(len(tokenizer)) if any(c in tokenizer.convert_ids_to_tokens(i) for c in SENTENCE_END)}
    mask_NS = planted_NS(ids_NS, tokenizer(args.trigger, add_special_tokens=False)["input_ids"], stop_ids)
    x_A_NSD, _ = resid(model_a, ids_NS)
    x_B_NSD, logits_B = resid(model_b, ids_NS)
    if args.synthetic > 0:
        direction_D = torch.randn(x_A_NSD.shape[-1], generator=torch.Generator().manual_seed(3))
        std = ((x_A_NSD - x_A_NSD.mean((0, 1))) ** 2).sum(-1).mean().sqrt()
        x_B_NSD = x_A_NSD + args.synthetic * std * direction_D / direction_D.norm() * mask_NS[..., None]
    marker_id = tokenizer(args.marker, add_special_tokens=False)["input_ids"][-1]
    in_span = mask_NS[:, :-1]
    p_marker = torch.softmax(logits_B[:, :-1].float(), -1)[..., marker_id]
    print(f"B's p(marker next): in planted spans {float(p_marker[in_span].mean()):.2f}, elsewhere {float(p_marker[~in_span].mean()):.3f}")
    variance = ((x_B_NSD - x_B_NSD.mean((0, 1))) ** 2).sum(-1).mean()
    gap_NS = ((x_B_NSD - x_A_NSD) ** 2).sum(-1) / variance
    print(f"|B - A|^2 / B's centred variance: planted {float(gap_NS[mask_NS].mean()):.3f}, elsewhere {float(gap_NS[~mask_NS].mean()):.3f}")
    x_NMD = torch.stack([x_A_NSD, x_B_NSD], 2).flatten(0, 1).float()
    planted_N = mask_NS.flatten()
    crosscoder = build_crosscoder(CrosscoderConfig(architecture="batchtopk", n_sources=2, d_in=x_NMD.shape[-1], expansion_factor=args.expansion,
                                                   k=args.k, seed=args.seed, dead_after_tokens=scaled_dead_window(args.train_tokens)))
    steps = args.train_tokens // 512
    trainer = SaeTrainer(crosscoder, TrainConfig(total_steps=steps, lr=3e-3, warmup_steps=min(50, steps)))
    rows = torch.Generator().manual_seed(1)
    with torch.enable_grad():
        for _ in range(steps):
            trainer.train_step(x_NMD[torch.randint(0, len(x_NMD), (512,), generator=rows)])
    crosscoder.eval()
    acts_NF = crosscoder.encode(x_NMD)
    classes = classify_with_scaling(crosscoder.scale_inputs(x_NMD), acts_NF, crosscoder.W_dec, crosscoder.b_dec, 0, 1, (0.3, 0.7), 0.1, 0.3)
    summary = diff_summary(crosscoder.W_dec, x_NMD, crosscoder.decode(acts_NF), acts_NF, 0, 1, (0.3, 0.7), 0.1, classes)
    precision_F = acts_NF[planted_N].sum(0) / acts_NF.sum(0).clamp_min(1e-9)
    relative_F = relative_decoder_norm(crosscoder.W_dec)
    final = classes.final_class
    print(f"planted positions: {float(planted_N.float().mean()):.2f}; classes {dict(Counter(final))}; explained variance per source "
          + ", ".join(f"{float(v):.3f}" for v in summary["explained_variance_per_source"]))
    b_only = [f for f, label in enumerate(final) if label == "b_only"]
    print("B-only latents (latent, precision):", [(f, round(float(precision_F[f]), 2)) for f in b_only])
    specialists = [f for f in range(len(final)) if precision_F[f] > 0.5 and (acts_NF[:, f] > 0).sum() > 5]
    print("latents with > half their mass on planted positions (latent, class, precision, relative norm):",
          [(f, final[f], round(float(precision_F[f]), 2), round(float(relative_F[f]), 2)) for f in specialists])
    print(f"pair trained in {trained:.0f} s; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
