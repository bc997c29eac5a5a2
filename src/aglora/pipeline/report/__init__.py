"""The report stage: `report.md`, a self-contained `report.html`, and figures, for one run.

`write_report(run_dir)` reads the artifacts the pipeline left in a run directory (`metrics.json`
is required; `probe_results.jsonl`, `train_history.json`, `scores.safetensors`, `masks.json` and
`config.yaml` are optional, and a missing one only skips its section) and writes:

* `figures/*.png` - family accuracies and leak rates, the saliency heatmap with the selected
  neurons, selected neurons per layer, the training curves and the relearning curves
  (`figures`);
* `report.md` - the report, figures referenced by relative path;
* `report.html` - the same report with the figures inlined as base64 data URIs, so the file can
  be mailed or archived alone (no scripts, no external links or stylesheets).

Both documents are built from one list of blocks (`document`), so they always carry the same
sections (`sections`). A feature package adds its own section through `extra_sections`, a list
of functions `metrics -> blocks` (a ban's recommendation metrics). Every file is written
atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from aglora.pipeline.report.document import Block, render_html, render_markdown
from aglora.pipeline.report.inputs import RunInputs, load_inputs
from aglora.pipeline.report.sections import (
    answers_section,
    config_section,
    cost_section,
    families_figure_section,
    fluency_section,
    mask_section,
    relearn_section,
    report_title,
    responses_section,
    tables_section,
    training_section,
    verdict_section,
)
from aglora.runtime.artifacts import write_text

Section = Callable[[dict], list[Block]]


def build_blocks(inputs: RunInputs, fig_dir: Path,
                 extra_sections: Sequence[Section] = ()) -> list[Block]:
    m = inputs.metrics
    extra = [b for section in extra_sections for b in section(m)]
    return [*verdict_section(m), *extra, *tables_section(m),
            *families_figure_section(m, fig_dir),
            *mask_section(inputs, fig_dir), *training_section(inputs, fig_dir),
            *answers_section(m, fig_dir), *responses_section(inputs),
            *cost_section(m, inputs.history), *fluency_section(m),
            *relearn_section(m, fig_dir), *config_section(inputs.config_text)]


def write_report(run_dir: Path, extra_sections: Sequence[Section] = ()) -> tuple[Path, Path]:
    """Write run_dir/report.md, run_dir/report.html and run_dir/figures/*.png; return (md, html)."""
    run_dir = Path(run_dir)
    inputs = load_inputs(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(inputs, fig_dir, extra_sections)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_text(md_path, render_markdown(blocks))
    write_text(html_path, render_html(blocks, report_title(inputs.metrics)))
    return md_path, html_path
