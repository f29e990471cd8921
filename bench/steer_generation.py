"""Steered generation with and without the KV cache, side by side on the packaged SmolLM2-135M.

Both loops are infra.steer.generate.generate with the same prompt, edit and settings (greedy):
`cached` runs the prompt once and then one token per step; `full` re-runs the whole sequence
every step (the pre-cache loop, kept as the reference the tests compare against). The edit adds a
random unit direction x 4 at blocks.6.hook_resid_post at every position. Best of --reps, the two
alternated so machine noise hits both; the tokens are checked equal.
Run: `.venv/bin/python -m bench.steer_generation [--new-tokens N] [--reps R]`.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

from infra.lm.hookpoints import Hookpoint
from infra.lm.models import PACKAGED_SMOLLM2, load_model
from infra.steer.generate import generate, prompt_ids, special_ids

HOOKPOINT = "blocks.6.hook_resid_post"
PROMPT = "The history of the Python programming language begins"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_model(PACKAGED_SMOLLM2, device="cpu")
    direction_D = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    direction_D = 4.0 * direction_D / direction_D.norm()

    def add(x_BSD: torch.Tensor, keep_BS: torch.Tensor) -> torch.Tensor:
        return torch.where(keep_BS[..., None], x_BSD, x_BSD + direction_D.to(x_BSD))

    ids, specials, hook = prompt_ids(tokenizer, PROMPT), special_ids(tokenizer), Hookpoint.parse(HOOKPOINT)
    best = {"cached": float("inf"), "full": float("inf")}
    tokens = {}
    for _ in range(args.reps):
        for name, use_cache in (("cached", True), ("full", False)):
            started = time.perf_counter()
            tokens[name] = generate(model, hook, ids, specials, add, args.new_tokens, 0.0, 0, None, use_cache=use_cache).new_ids
            best[name] = min(best[name], time.perf_counter() - started)
    same = tokens["cached"] == tokens["full"]
    print(f"# {date.today()} {platform.node()} {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"prompt {len(ids)} tokens, {args.new_tokens} new tokens, edit at {HOOKPOINT}; same tokens: {same}")
    print("| loop | seconds | tokens/s |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {args.new_tokens / seconds:.1f} |")
    print(f"speed-up cached / full: {best['full'] / best['cached']:.2f}x")


if __name__ == "__main__":
    main()
