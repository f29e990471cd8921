"""Progress a person can watch: tqdm bars on the terminal, Prefect progress artifacts, one task run per group."""

from __future__ import annotations

import pytest

from flows.harvest import HarvestSpec, harvest
from flows.sweep import SweepSpec, sweep
from infra.progress import PoolProgress
from tests.infra.tiny_models import build_tiny_model

HOOKPOINT = "blocks.1.hook_resid_post"


def test_pool_progress_sums_items_per_bar_and_ends_at_100(monkeypatch, capsys):
    monkeypatch.setenv("SAEFLOW_PROGRESS", "1")  # bars even though pytest's stderr is no terminal
    sent: list[tuple[float, str]] = []
    progress = PoolProgress({0: 100, 1: 100, 2: 50}, {0: "group 0", 1: "group 0", 2: "group 1"}, "tok", lambda p, d: sent.append((p, d)))
    progress.update({0: (40, {"loss": 0.5}), 2: (10, {})})
    assert progress.bar_done("group 0") == 40 and progress.percent() == pytest.approx(100 * 50 / 250)
    assert "group 0: 40/200 tok" in progress.describe() and "loss 0.5" in progress.describe()
    progress.update({0: (30, {})})  # a stale (reordered) report never moves a bar back
    assert progress.bar_done("group 0") == 40
    progress.close(finished=True)
    assert sent[-1][0] == 100.0 and "done" in sent[-1][1]
    err = capsys.readouterr().err
    assert "group 0" in err and "group 1" in err and "tok" in err


def progress_artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["progress"]))
        )


def task_run_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [run.name for run in runs]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_server", "ray_local")
@pytest.mark.timeout(300)
def test_harvest_and_sweep_show_progress_and_map_groups(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SAEFLOW_PROGRESS", "1")
    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    harvest_spec = HarvestSpec(model=str(model), hookpoints=[HOOKPOINT], source="builtin:pydoc", context_length=32,
                               num_tokens=32 * 48, contexts_per_shard=16, num_actors=2, dtype="float32", root=str(tmp_path))
    state = harvest(harvest_spec, return_state=True)
    harvest_uri = state.result().harvest
    (artifact,) = progress_artifacts(state.state_details.flow_run_id)
    assert artifact.data == 100 and "tokens harvested" in artifact.description and "1,536/1,536 tok" in artifact.description
    assert "harvest" in capfd.readouterr().err

    spec = SweepSpec(name="progress", harvest=harvest_uri, hookpoint=HOOKPOINT, architectures=["topk"], expansion_factors=[2.0],
                     ks=[4, 8], lrs=[3e-3], train_tokens=128 * 60, batch_size=128, warmup_steps=5, eval_contexts=8,
                     splice_contexts=0, shuffle_buffer=1024, max_group_size=1, num_actors=2, root=str(tmp_path), wandb_mode="disabled")
    state = sweep(spec, return_state=True)
    state.result()
    flow_run_id = state.state_details.flow_run_id
    artifacts = progress_artifacts(flow_run_id)
    assert len(artifacts) == 2 and all(a.data == 100 for a in artifacts)
    assert sorted(a.description.split(": ")[0].rsplit(" ", 1)[-1] for a in artifacts) == ["0", "1"]
    assert all("7,680/7,680 tok" in a.description and "loss" in a.description for a in artifacts)
    assert sorted(n for n in task_run_names(flow_run_id) if n.startswith("train-group")) == ["train-group-0", "train-group-1"]
    err = capfd.readouterr().err
    assert "group 0" in err and "group 1" in err and "tok/s" in err

    # Both runs recorded their throughput, so a dry run of the next sweep prices its device time.
    from infra.cost import measured_rates
    from saeflow.cli import main

    assert set(measured_rates(str(tmp_path), "sweep", "sae")) == {"cpu"}
    assert set(measured_rates(str(tmp_path), "harvest", str(model))) == {"cpu"}
    assert main(["sweep", "--dry-run", "--set", f"harvest={harvest_uri}", "--set", f"root={tmp_path}", "--set", f"hookpoint={HOOKPOINT}",
                 "--set", "ks=[4]", "--set", "expansion_factors=[2.0]", "--set", "architectures=[topk]"]) == 0
    out = capfd.readouterr().out
    assert "# sweep: 1,998,848 tokens, 1 points in 1 groups" in out and "device time on cpu: ~" in out


def test_hidden_bars_still_feed_the_sink(monkeypatch):
    monkeypatch.setenv("SAEFLOW_PROGRESS", "0")
    sent: list[tuple[float, str]] = []
    progress = PoolProgress({0: 10}, {0: "harvest"}, "tok", lambda p, d: sent.append((p, d)))
    progress.update({0: (5, {})})
    progress.close(finished=True)
    percent, description = sent[-1]
    assert percent == 100.0 and description.startswith("harvest: 10/10 tok, ") and description.endswith("tok/s, done")
