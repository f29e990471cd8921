"""The features stage: what each latent of an SAE responds to, stored as queryable tables.

{features} = {root}/features/{features_id}
{features}/_manifest.json                               written last: the commit marker
{features}/_shards/part-{i:05d}.json                    per-shard commit marker (every SAE encoded)
{features}/latents/sae={name}/part-{i:05d}.parquet      sparse latent activations, one row per non-zero
{features}/saes/{name}/stats.parquet                    per latent: density, mean/max, histogram
{features}/saes/{name}/examples.parquet                 top and quantile-bin examples with context windows
{features}/saes/{name}/logit_lens.parquet               decoder direction -> promoted / suppressed tokens
{features}/saes/{name}/attribution.parquet              token ablations on the top examples
{features}/saes/{name}/_details.json                    per-SAE commit marker of the four tables
{features}/browser.html                                 the static feature browser (self-contained)
{features}/neuronpedia/{name}.json                      the same features in Neuronpedia's feature JSON

Modules: inputs (which SAEs, checked against the harvest), plan (ids and layout), encode
(harvest shard -> sparse latent table), latent_table (schema and pushdown queries), stats
(density, histograms, examples), lens (logit lens, ablation attribution), details (one SAE's
tables), browser (HTML), neuronpedia (export), mcs (decoder similarity across SAEs), run.
"""
