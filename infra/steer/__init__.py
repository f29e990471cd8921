"""The steering stage: what a feature (or a contrastive direction) does when added to, clamped in, or removed from the model.

{steer} = {root}/steer/{steer_id}
{steer}/_manifest.json              written last: the commit marker (plan, typical norm, summaries)
{steer}/generations.parquet         per prompt and condition: baseline vs steered text, next-token KL, promoted tokens
{steer}/caa.safetensors             the contrastive steering vector (when positive/negative prompts are given)
{steer}/caa_cosines.parquet         its cosine with every latent of the SAE (when an SAE is given)
{steer}/hookpoint_ablation.parquet  CE/KL with the hookpoint zero-, mean- and resample-ablated, CE recovered against each
{steer}/latent_ablation.parquet     per latent, mode and example token: next-token loss with the latent removed
{steer}/report.md                   both generations side by side, the shift, the ablations

Modules: inputs (torch-free checks the CLI shares), plan (id and layout), generate (deterministic
generation under an edit), conditions (the edits: add, clamp, caa), contrastive (CAA vectors),
ablation (hookpoint and latent ablations), schemas (pandera), report (markdown), run.
Every edit goes through infra.lm.splice_eval.replacing_activation, whose hooks sit on the modules
infra.lm.hookpoints.hooked_module names, the same ones the harvest captures.
"""
