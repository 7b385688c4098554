"""report.html opened in a real browser (headless Chromium): it renders, starts with the answer, every section has
its line on how to read it, every image loads and nothing links outside the page. Skips where Chromium is absent
(.ci/run installs it)."""
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")

# Run in the page once it has loaded: what the test checks, written into the DOM that --dump-dom prints.
PROBE = """
<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const report = {
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
    sections: [...document.querySelectorAll("h2")].map(h => h.id),
    how: document.querySelectorAll("p.how").length,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""


def fake_run(run_dir: Path, trials: int = 8) -> None:
    """A finished search's files, without Ray: the study, the leaderboard, the best config, an ensemble."""
    import optuna
    import pandas as pd
    from matplotlib.figure import Figure

    from search.study import journal_storage

    run_dir.mkdir(parents=True)
    study = optuna.create_study(storage=journal_storage(run_dir / "optuna_study.log"), study_name="demo",
                                direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("metric", "val_acc")
    rows = []
    for i in range(trials):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        head = trial.suggest_categorical("head", ["linear", "mlp"])
        trial.suggest_float("drop_rate", 0.0, 0.5)
        trial.set_user_attr("ray_trial_id", f"t{i:07d}")
        epochs = 4 if i % 2 == 0 else 1
        for epoch in range(1, epochs + 1):
            trial.report(0.5 + 0.1 * epoch * (i + 1) / trials, epoch)
        value = 0.5 + 0.1 * epochs * (i + 1) / trials
        study.tell(trial, value if epochs == 4 else None,
                   state=optuna.trial.TrialState.COMPLETE if epochs == 4 else optuna.trial.TrialState.PRUNED)
        rows.append({"trial_id": f"t{i:07d}", "status": "completed" if epochs == 4 else "stopped_early",
                     "epochs": epochs, "best_epoch": epochs, "best_val_acc": value, "backbone": "resnet10t", "lr": lr,
                     "head": head})
    board = pd.DataFrame(rows).sort_values("best_val_acc", ascending=False)
    board.insert(0, "rank", range(1, len(board) + 1))
    board.to_csv(run_dir / "leaderboard.csv", index=False)
    (run_dir / "best_config.json").write_text(json.dumps({"backbone": "resnet10t", "lr": 0.01}))
    best = board.iloc[0]["trial_id"]
    scores = {"acc": 0.9, "macro_f1": 0.89}
    (run_dir / "ensemble.json").write_text(json.dumps({
        "strategy": "best_single", "members": [{"trial_id": best, "weight": 1.0, "backbone": "resnet10t",
                                                "val_acc": 0.9}],
        "scores": {"strategies": {"best_single": {"members": 1, "val": scores, "cv": scores}}}}))
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow([[1, 0], [0, 1]])
    fig.savefig(run_dir / "confusion_matrix.png")


def test_the_report_renders_in_a_browser_with_every_image_and_section(tmp_path):
    from search.report import write_report

    run_dir = tmp_path / "run"
    fake_run(run_dir)
    write_report(run_dir, say=lambda _: None)
    page = (run_dir / "report" / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", probed.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    report = json.loads(found.group(1).replace("&quot;", '"'))
    assert report["broken"] == [] and report["images"] >= 5, report
    assert report["links"] == []  # nothing outside the page: it opens offline
    sections = report["sections"]
    # the answer first: the leaderboard, the best config, the ensemble and its confusion matrix, then what mattered
    assert sections[:5] == ["leaderboard", "best-config", "ensemble", "confusion", "what-mattered"], sections
    assert {"importance", "parallel_coordinate", "learning_curves", "optimization_history"} <= set(sections)
    assert report["how"] >= len(sections) - 2  # a line on how to read each (the importance table and "what
    # mattered" have their explanation in the section's text)
    assert "fewer than 20, so read the ranking as a hint" in page  # 8 trials: importance comes with its caveat
    # trial numbers: the leaderboard's id with the study's number, as optuna-dashboard shows it
    assert re.search(r"<td>1</td>\s*<td>t0000006</td>\s*<td>6</td>", page)
