"""The sweep report as a hub: one section per later stage, one line per run, rewritten in place."""

from __future__ import annotations

from pathlib import Path

from infra.report_links import carried_links, link_from_sweep_report, sweep_report_of

SWEEP = "tiny-sweep-0123456789"


def sweep_layout(root: Path) -> tuple[list[str], Path]:
    saes = [str(root / "saes" / SWEEP / name) for name in ("topk-a", "topk-b")]
    report = root / "evals" / SWEEP / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text(f"# Sweep `{SWEEP}`\n\n| sae | ev |\n|---|---|\n")
    return saes, report


def test_each_stage_keeps_its_own_section_and_one_line_per_run(tmp_path: Path):
    saes, report = sweep_layout(tmp_path)
    browser = str(tmp_path / "features" / "f1" / "browser.html")
    steering = str(tmp_path / "steer" / "s1" / "report.md")
    assert link_from_sweep_report(saes, "Feature browsers", "f1", browser, "2 SAEs") == str(report)
    assert link_from_sweep_report(saes[:1], "Steering runs", "s1", steering, "latents 3") == str(report)
    link_from_sweep_report(saes, "Feature browsers", "f2", browser.replace("f1", "f2"), "2 SAEs")
    link_from_sweep_report(saes, "Feature browsers", "f1", browser, "2 SAEs, re-run")  # replaces its own line
    assert report.read_text() == (
        f"# Sweep `{SWEEP}`\n\n| sae | ev |\n|---|---|\n"
        "\n## Feature browsers\n\n- [f2](../../features/f2/browser.html): 2 SAEs\n- [f1](../../features/f1/browser.html): 2 SAEs, re-run\n"
        "\n## Steering runs\n\n- [s1](../../steer/s1/report.md): latents 3\n"
    )


def test_no_link_without_one_sweep_and_its_report(tmp_path: Path):
    saes, report = sweep_layout(tmp_path)
    assert sweep_report_of([*saes, str(tmp_path / "elsewhere" / "sae")]) is None  # SAEs of two folders
    assert sweep_report_of([str(tmp_path / "loose" / "sae")]) is None  # not under saes/{sweep_id}
    report.unlink()
    assert link_from_sweep_report(saes, "Steering runs", "s1", str(tmp_path / "s1.md"), "x") is None


def test_a_section_ends_where_its_lines_end_and_a_rewritten_report_carries_the_links(tmp_path: Path):
    saes, report = sweep_layout(tmp_path)
    link_from_sweep_report(saes, "Steering runs", "s1", str(tmp_path / "steer" / "s1" / "report.md"), "a")
    report.write_text(report.read_text() + "\nA note someone added by hand.\n")
    link_from_sweep_report(saes, "Steering runs", "s2", str(tmp_path / "steer" / "s2" / "report.md"), "b")
    text = report.read_text()
    assert text.endswith("- [s1](../../steer/s1/report.md): a\n- [s2](../../steer/s2/report.md): b\n\nA note someone added by hand.\n")
    link_from_sweep_report(saes, "Feature browsers", "f1", str(tmp_path / "features" / "f1" / "browser.html"), "c")
    # The sweep rewrites its report (a re-run of the nightly spec): the link sections come along, nothing else.
    assert carried_links(str(report)) == ("\n## Feature browsers\n\n- [f1](../../features/f1/browser.html): c\n"
                                          "\n## Steering runs\n\n- [s1](../../steer/s1/report.md): a\n- [s2](../../steer/s2/report.md): b\n")
    assert carried_links(str(tmp_path / "no-report.md")) == ""
