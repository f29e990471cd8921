"""Every architecture at equal L0 on the hard synthetic toy, saeflow's trainer and SAELens's side by side.

The toy (sae_core.synthetic_hard): power-law firing frequencies, co-occurring pairs, lognormal
magnitudes, anisotropic directions. The k architectures run at k = the toy's true mean L0
(rounded); the penalty architectures (relu, jumprelu, gated) get the sparsity coefficient that
lands their held-out L0 nearest that target, found per library by a bracketing search over whole
runs (each library's penalty is scaled its own way, so each is tuned on its own).

One recipe for both libraries: the same batches in the same order (the toy's seeded stream),
dictionary size, steps, batch, lr (constant), Adam (0.9, 0.999), gradient norm clipped to 1, no
sparsity warm-up, inputs scaled to mean norm sqrt(d) estimated on the first batch, dead-latent
window a tenth of the run. Everything else (initialisation, AuxK, thresholds) is each library's
own default: that is what is compared. SAELens's SAEs are scored as their saved inference models
(BatchTopK and Matryoshka become JumpReLU with the learned threshold, as saeflow's do in eval).

Scores, on held-out tokens: L0, explained variance, mean over true features of the best decoder
cosine, fraction of true features with a decoder row at cosine > 0.9, and training seconds.
Run: `.venv/bin/python -m bench.hard_toy [--steps N] [--tries T] [--libraries ...] [--architectures ...] [--recipe tiny]`.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date
from functools import lru_cache
from itertools import chain

import torch

from bench.library_runs import fit_saeflow, fit_saelens
from sae_core import SaeConfig, TrainConfig
from sae_core.config import K_ARCHITECTURES, scaled_dead_window
from sae_core.metrics import explained_variance, l0_norm
from sae_core.registry import SAE_CLASSES
from sae_core.synthetic import fraction_recovered, recovery_score
from sae_core.synthetic_hard import HardSyntheticFeatures

PENALTY_ARCHITECTURES = ("relu", "jumprelu", "gated")
SAELENS_CLASSES = {
    # saeflow name -> (SAELens training class, its config class, the config field that sets sparsity)
    "relu": ("StandardTrainingSAE", "StandardTrainingSAEConfig", "l1_coefficient"),
    "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig", "k"),
    "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", "k"),
    "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", "l0_coefficient"),
    "gated": ("GatedTrainingSAE", "GatedTrainingSAEConfig", "l1_coefficient"),
    "matryoshka_batchtopk": ("MatryoshkaBatchTopKTrainingSAE", "MatryoshkaBatchTopKTrainingSAEConfig", "k"),
}


@dataclass(frozen=True)
class Recipe:
    """The toy and the training budget both libraries get."""

    d: int = 64
    num_features: int = 256
    mean_active: float = 5.0
    """Independent draws per token; the pairs lift the true mean L0 to ~6.2 at these sizes."""
    d_sae: int = 512
    batch: int = 512
    steps: int = 1000
    lr: float = 3e-3
    data_seed: int = 1
    """Not the SAEs' seed (0): saeflow's decoder starts from random_directions(Generator(0)), and the
    toy's directions from the same seed would hand it the answer at step 0."""
    held_out: int = 8192

    def toy(self) -> HardSyntheticFeatures:
        return HardSyntheticFeatures(d=self.d, num_features=self.num_features, mean_active=self.mean_active, seed=self.data_seed)

    def batches(self) -> list[torch.Tensor]:
        """The seeded training stream: every run, of either library, sees these batches in this
        order; drawn once, so no run's time includes sampling."""
        return training_stream(self)

    def held_out_ND(self) -> torch.Tensor:
        # A generator no training stream uses (those are seeded data_seed + 1).
        return self.toy().sample(self.held_out, torch.Generator().manual_seed(10_000 + self.data_seed))

    @property
    def target_l0(self) -> int:
        return max(1, round(self.toy().mean_l0))


@lru_cache(maxsize=1)
def training_stream(recipe: Recipe) -> list[torch.Tensor]:
    return list(recipe.toy().batches(recipe.batch, recipe.steps))


RECIPES = {"default": Recipe(), "tiny": Recipe(d=32, num_features=128, mean_active=4.0, d_sae=256, batch=256, steps=400)}


@dataclass
class Result:
    library: str
    architecture: str
    knob: str
    """k, or the tuned sparsity coefficient."""
    l0: float
    ev: float
    mean_max_cos: float
    recovered: float
    """Fraction of true features whose best decoder row has cosine > 0.9."""
    seconds: float


def saeflow_config(architecture: str, knob: float, recipe: Recipe) -> SaeConfig:
    sparsity = {"k": int(knob)} if architecture in K_ARCHITECTURES else {"sparsity_coefficient": knob}
    return SaeConfig(architecture, d_in=recipe.d, d_sae=recipe.d_sae, sparsity_warmup_fraction=0.0,
                     dead_after_tokens=scaled_dead_window(recipe.steps * recipe.batch), **sparsity)


def train_saeflow(architecture: str, knob: float, recipe: Recipe):
    """(seconds, eval-mode SAE): saeflow's own defaults, normalising on the first batch."""
    train = TrainConfig(total_steps=recipe.steps, lr=recipe.lr, decay_fraction=0.0, max_grad_norm=1.0, autocast_bf16="never")
    return fit_saeflow(saeflow_config(architecture, knob, recipe), train, recipe.batches())


def saelens_sae(architecture: str, knob: float, recipe: Recipe):
    """A fresh SAELens training SAE; Matryoshka gets saeflow's default nested widths."""
    import sae_lens

    class_name, config_name, sparsity_field = SAELENS_CLASSES[architecture]
    fields = {sparsity_field: int(knob) if sparsity_field == "k" else knob}
    if architecture == "matryoshka_batchtopk":
        prefixes = saeflow_config(architecture, knob, recipe).matryoshka_prefixes
        fields["matryoshka_widths"] = [*prefixes, recipe.d_sae]
    config = getattr(sae_lens, config_name)(d_in=recipe.d, d_sae=recipe.d_sae, normalize_activations="expected_average_only_in", **fields)
    torch.manual_seed(0)
    return getattr(sae_lens, class_name)(config)


def train_saelens(architecture: str, knob: float, recipe: Recipe):
    """(seconds, SAELens inference SAE) from SAELens's SAETrainer on the same batches as saeflow."""
    from sae_lens import SAE

    sae = saelens_sae(architecture, knob, recipe)
    # SAELens reads its normalisation estimate off the front of the stream; handing it one extra
    # copy of the first batch keeps the training batches identical to saeflow's (which estimates on
    # the first batch and then trains on it).
    stream = chain(recipe.batches()[:1], recipe.batches())
    seconds = fit_saelens(sae, stream, recipe.batch, recipe.steps, recipe.lr, progress_bar=False, n_batches_for_norm_estimate=1,
                          dead_feature_window=max(1, recipe.steps // 10))
    with tempfile.TemporaryDirectory(prefix="hard-toy-") as folder:
        sae.save_inference_model(folder)
        return seconds, SAE.load_from_disk(folder).eval()


TRAINERS = {"saeflow": train_saeflow, "saelens": train_saelens}


@torch.no_grad()
def score(sae, truth: HardSyntheticFeatures, x_ND: torch.Tensor) -> dict[str, float]:
    """Held-out L0 and explained variance, and how well the decoder rows match the true directions."""
    acts_NF = sae.encode(x_ND)
    W_dec_FD = sae.W_dec.detach()
    return {"l0": float(l0_norm(acts_NF)), "ev": float(explained_variance(x_ND, sae.decode(acts_NF))),
            "mean_max_cos": recovery_score(truth.directions_ND, W_dec_FD), "recovered": fraction_recovered(truth.directions_ND, W_dec_FD)}


def next_coefficient(tried: dict[float, float], target: float, step: float = 4.0) -> float:
    """The next sparsity coefficient to try, given {coefficient: L0} so far (L0 falls as it grows).

    Until the target is bracketed, step out by a factor; then interpolate log L0 linearly in log
    coefficient (L0 ~ c^-b is close to a power law), kept inside the inner 80% of the bracket so a
    curved stretch still shrinks it like a bisection would.
    """
    above = [c for c, l0 in tried.items() if l0 > target]
    below = [c for c, l0 in tried.items() if l0 <= target]
    if not below:
        return max(above) * step
    if not above:
        return min(below) / step
    low, high = max(above), min(below)
    log_l0_low, log_l0_high = math.log(tried[low]), math.log(max(tried[high], 0.1))  # an L0 of 0 has no log
    fraction = (log_l0_low - math.log(target)) / (log_l0_low - log_l0_high)
    fraction = min(max(fraction, 0.1), 0.9)
    return math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))


def tune_coefficient(l0_at: Callable[[float], float], target: float, start: float, tries: int, tolerance: float = 0.02) -> float:
    """The coefficient, among at most `tries` searched, whose L0 is nearest the target; stops early
    within `tolerance` of it (closer is run-to-run noise in the 4th decimal of the coefficient)."""
    tried: dict[float, float] = {}
    coefficient = start
    for _ in range(tries):
        tried[coefficient] = l0_at(coefficient)
        if abs(tried[coefficient] - target) <= tolerance * target:
            break
        coefficient = next_coefficient(tried, target)
    return min(tried, key=lambda c: abs(tried[c] - target))


def run_case(library: str, architecture: str, recipe: Recipe, tries: int = 6, coefficient: float | None = None) -> Result:
    """One (library, architecture) at the recipe's target L0; a penalty architecture keeps the
    tuning run that landed nearest it (tuning runs are whole runs: an L1 penalty keeps thinning
    the code for the whole run, so a short run's L0 overshoots the target by 1.5-25x), or trains
    once at `coefficient` when one is given."""
    train = TRAINERS[library]
    truth, x_ND = recipe.toy(), recipe.held_out_ND()

    def result_at(knob: float) -> Result:
        seconds, sae = train(architecture, knob, recipe)
        label = f"coef {knob:.3g}" if architecture in PENALTY_ARCHITECTURES else f"k {knob:.0f}"
        return Result(library, architecture, label, seconds=seconds, **score(sae, truth, x_ND))

    if architecture not in PENALTY_ARCHITECTURES:
        return result_at(float(recipe.target_l0))
    if coefficient is not None:
        return result_at(coefficient)
    runs: dict[float, Result] = {}

    def l0_at(coefficient: float) -> float:
        runs[coefficient] = result_at(coefficient)
        return runs[coefficient].l0

    best = tune_coefficient(l0_at, recipe.target_l0, start=1.0, tries=tries)
    print(f"# tuned {library} {architecture}: " + ", ".join(f"{c:.3g} -> L0 {r.l0:.2f}" for c, r in runs.items()), flush=True)
    return runs[best]


def markdown_table(results: list[Result]) -> str:
    rows = ["| library | architecture | sparsity | L0 | EV | mean max cos | recovered (cos > 0.9) | train s |", "|---" * 8 + "|"]
    rows += [f"| {r.library} | {r.architecture} | {r.knob} | {r.l0:.2f} | {r.ev:.3f} | {r.mean_max_cos:.3f} | {r.recovered:.3f} | "
             f"{r.seconds:.1f} |" for r in results]
    return "\n".join(rows)


def cases(libraries: list[str], architectures: list[str]) -> list[tuple[str, str]]:
    """(library, architecture) pairs, each architecture's libraries next to each other; SAELens has no deep_topk."""
    return [(lib, arch) for arch in architectures for lib in libraries if lib == "saeflow" or arch in SAELENS_CLASSES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=list(RECIPES), default="default")
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    parser.add_argument("--tries", type=int, default=6, help="runs that tune each penalty architecture's coefficient, per library")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--libraries", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    parser.add_argument("--architectures", nargs="+", default=list(SAE_CLASSES), choices=list(SAE_CLASSES))
    args = parser.parse_args()
    # One thread: on this shared 2-core VM two threads per process run these small products up to
    # 20x slower once other jobs load the machine (OpenMP threads waiting on busy cores).
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe] if args.steps is None else replace(RECIPES[args.recipe], steps=args.steps)
    print(f"# {date.today()} {platform.node()} {platform.processor() or platform.machine()} torch {torch.__version__} "
          f"threads {torch.get_num_threads()}")
    print(f"# recipe {asdict(recipe)}; target L0 {recipe.target_l0} (true mean L0 {recipe.toy().mean_l0:.2f}); "
          f"penalty architectures: nearest of {args.tries} tuning runs")
    results = []
    for library, architecture in cases(args.libraries, args.architectures):
        results.append(run_case(library, architecture, recipe, args.tries))
        print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
