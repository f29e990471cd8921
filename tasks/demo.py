"""Tasks only the offline demo needs: a pair of checkpoints to diff, and the closing summary."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from infra.storage import join, write_bytes_atomic


@task(retries=1)
def make_checkpoint_pair_task(root: str, tokenizer: str, early_step: int, late_step: int) -> list[str]:
    """Train a small GPT-NeoX briefly and save it at two steps (no hub checkpoints offline)."""
    from infra.lm.checkpoint_pair import make_checkpoint_pair

    early, late = make_checkpoint_pair(join(root, "demo-checkpoints"), tokenizer, early_step=early_step, late_step=late_step)
    return [str(early), str(late)]


@task
def demo_summary_task(root: str, stages: dict[str, Any]) -> str:
    """One markdown page linking every stage's output; returns its URI."""
    lines = ["# saeflow offline demo", ""]
    for stage, uri in stages.items():
        lines.append(f"- **{stage}**: `{uri}`")
    markdown = "\n".join(lines) + "\n"
    uri = join(root, "demo", "README.md")
    write_bytes_atomic(uri, markdown.encode())
    create_markdown_artifact(markdown=markdown, key="saeflow-demo", description="Where the demo's outputs are")
    return uri
