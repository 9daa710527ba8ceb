"""Paper-ready tables: confidence intervals, the test-set uncertainty, paired tests against a
reference row, LaTeX that parses; and the provenance and output of the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.cli import entry
from clbench.results.aggregate import ci95, paired_t_pvalue
from clbench.results.folders import binomial_se
from clbench.results.leaderboard import write_leaderboard
from clbench.results.tables import people_table, to_latex
from clbench.sweep.experiment import Experiment, run_experiment


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables") / "exp"
    run_experiment(Experiment(strategies=["finetune", "er", "ewc"], seeds=[0, 1, 2], iterations=6, eval_every=3,
                              eval_subset=20), root, show_progress=False)
    return root


def _acc(root, strategy) -> np.ndarray:
    return np.array([json.loads((root / f"runs/split-digits/{strategy}/seed{s}/summary.json").read_text())["acc"]
                     for s in (0, 1, 2)])


def test_confidence_intervals_and_paired_tests_are_scipys(three_seeds):
    lb = write_leaderboard([three_seeds], three_seeds).set_index("strategy")
    for strategy in ("finetune", "er", "ewc"):
        acc = _acc(three_seeds, strategy)
        half = stats.t.ppf(0.975, 2) * acc.std(ddof=1) / np.sqrt(3)
        assert lb.loc[strategy, "acc_ci95"] == pytest.approx(half)
    best = lb["acc_mean"].idxmax()
    assert lb.loc[best, "acc_vs_reference"] == "reference" and (lb["reference"] == best).all()
    for strategy in set(lb.index) - {best}:
        p = stats.ttest_rel(_acc(three_seeds, strategy), _acc(three_seeds, best)).pvalue
        assert lb.loc[strategy, "acc_p_vs_reference"] == pytest.approx(p)
        assert lb.loc[strategy, "acc_vs_reference"] == ("n.s." if p >= 0.05 else "worse")
    # an explicit reference row
    lb = write_leaderboard([three_seeds], three_seeds, reference="finetune").set_index("strategy")
    assert lb.loc["finetune", "acc_vs_reference"] == "reference"
    with pytest.raises(ValueError, match="no row labelled 'icarl'"):
        write_leaderboard([three_seeds], three_seeds, reference="icarl")


def test_the_t_statistics_equal_scipy_stats_on_hand_made_values():
    """They come from scipy.special (a second less to import than scipy.stats), with scipy.stats'
    values."""
    a, b = np.array([0.91, 0.93, 0.90, 0.95]), np.array([0.90, 0.90, 0.91, 0.92])
    assert paired_t_pvalue(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert paired_t_pvalue(a, a) == 1.0
    # a constant shift has no spread to test against: undefined, not "p = 0"
    assert np.isnan(paired_t_pvalue(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5])))
    assert ci95(a) == pytest.approx(stats.t.ppf(0.975, 3) * a.std(ddof=1) / 2, rel=1e-12)
    assert np.isnan(ci95(a[:1]))


def test_the_binomial_standard_error_on_a_hand_made_matrix(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"after_task": [0, 1], "task0": [0.9, 0.5], "task1": [0.1, 0.8]}).to_csv(run / "matrix.csv",
                                                                                          index=False)
    (run / "config.json").write_text(json.dumps({"evaluation": {"samples_per_task": [100, 400]}}))
    assert binomial_se(run) == pytest.approx(np.sqrt(0.5 * 0.5 / 100 + 0.8 * 0.2 / 400) / 2)


def test_the_markdown_table_says_how_to_read_it(three_seeds):
    lb = write_leaderboard([three_seeds], three_seeds)
    md = (three_seeds / "leaderboard.md").read_text()
    assert "95% confidence interval" in md and "ACC ↑" in md and "FORG ↓" in md and "ACC test-set SE" in md
    table = people_table(lb)
    assert {"setting", "params", "ACC vs reference"} <= set(table.columns)
    # one decimal for accuracies, everywhere
    assert all(re.fullmatch(r"-?\d+\.\d ± \d+\.\d", c) for c in table["ACC ↑"])


def test_latex_parses_as_a_booktabs_table(capsys, three_seeds):
    assert entry(["report", str(three_seeds), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert tex == (three_seeds / "leaderboard.tex").read_text() + "\n"
    body = tex[tex.index(r"\begin{tabular}"):tex.rindex(r"\end{tabular}")]
    spec = re.match(r"\\begin\{tabular\}\{(.*)\}\n", body).group(1)
    columns = len(re.findall(r"[lrc]", re.sub(r"@\{[^}]*\}", "", spec)))
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 1 + 3 and r"\toprule" in body and r"\midrule" in body and r"\bottomrule" in tex
    for line in rows:  # every row has as many cells as the column spec says
        cells = re.split(r"(?<!\\)&", line)
        assert sum(2 if c.strip().startswith(r"\multicolumn{2}") else 1 for c in cells) == columns
    # a caption and a label by default, and the decimal points of a column aligned (mean | ± CI)
    assert r"\caption{" in tex and r"\label{tab:" in tex and r"r@{\,}l" in spec
    outside_math = re.sub(r"\$[^$]*\$", "", body)
    assert not re.search(r"(?<!\\)[%_#]", outside_math) and "±" not in tex and "↑" not in tex and "†" not in tex
    assert r"gap\\depth $\downarrow$" in tex and r"$\pm\,$" in tex  # a two-line header; ± as math


def test_latex_escapes_what_it_must():
    tex = to_latex(pd.DataFrame({"scenario": ["a_b"], "strategy": ["x&y"], "setting": ["50%"], "params": ["#1"],
                                 "ACC ↑": ["1.0 ± 0.1"]}))
    assert r"a\_b" in tex and r"x\&y" in tex and r"50\%" in tex and r"\#1" in tex and r"$\uparrow$" in tex


def test_version_and_plain_clbench(capsys):
    assert entry(["--version"]) == 0
    assert re.match(r"clbench \d+\.\d+\.\d+", capsys.readouterr().out)
    assert entry([]) == 0
    assert "Commands:" in capsys.readouterr().out


def test_runs_record_the_code_that_made_them(three_seeds):
    versions = json.loads((three_seeds / "runs/split-digits/er/seed0/config.json").read_text())["versions"]
    assert versions["clbench"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a checkout (CI clones one): the commit is the checkout's
        assert versions["commit"] == head and isinstance(versions["dirty"], bool)


def test_progress_is_plain_lines_when_stderr_is_a_file(tmp_path):
    log = tmp_path / "err.log"
    with log.open("w") as err:
        done = subprocess.run([sys.executable, "-m", "clbench.cli", "run", "--strategy", "finetune", "--seeds", "0,1",
                               "--iterations", "3", "--eval-subset", "10", "--jobs", "1", "--no-plots", "--out",
                               str(tmp_path / "out")], stderr=err, stdout=subprocess.DEVNULL)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text
    assert re.search(r"^runs: 2/2 runs \(\d+ s, split-digits finetune seed \d done\)$", text, re.M), text


def _runs(rows: list[dict]) -> pd.DataFrame:
    base = {"scenario": "s", "setting": "class-il", "params": "{}", "settings": "{}"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_every_cell_says_what_its_header_says_on_hand_made_runs():
    nan = float("nan")
    runs = _runs([
        # a: three seeds; iterations to recover measured in one run only, WF10 in none (too sparse)
        {"strategy": "a", "seed": 0, "acc": 0.50, "gap_iters_to_recover": 3.0, "wf10": nan, "gap_depth": 0.30,
         "gap_noise": 0.02, "gap_unrecovered": 0.5, "wall_seconds": 10.0},
        {"strategy": "a", "seed": 1, "acc": 0.60, "gap_iters_to_recover": nan, "wf10": nan, "gap_depth": 0.32,
         "gap_noise": 0.03, "gap_unrecovered": 0.9, "wall_seconds": 12.0},
        {"strategy": "a", "seed": 2, "acc": 0.70, "gap_iters_to_recover": nan, "wf10": nan, "gap_depth": 0.34,
         "gap_noise": 0.04, "gap_unrecovered": 1.0, "wall_seconds": 11.0},
        # b: 0.004 below a on every seed... but on two seeds identically (no spread to test against)
        # b's WF10 is twice its floor on average: above noise (a's cannot be measured: n/a)
        {"strategy": "b", "seed": 0, "acc": 0.496, "gap_depth": nan, "gap_noise": 0.02, "gap_unrecovered": 1.0,
         "wf10": 0.05, "wf10_noise": 0.02},
        {"strategy": "b", "seed": 1, "acc": 0.596, "gap_depth": nan, "gap_noise": 0.02, "gap_unrecovered": 1.0,
         "wf10": 0.03, "wf10_noise": 0.02},
    ])
    from clbench.results.aggregate import leaderboard

    lb = leaderboard(runs, reference="a").set_index("strategy")
    table = people_table(lb.reset_index()).set_index("strategy")
    # one meaning of ±: the 95% CI, iterations to recover included; a count where runs are missing
    assert table.loc["a", "iters to recover ↓"] == "3.0 (1/3 runs)"
    assert table.loc["a", "WF10 ↓"] == "n/a" and lb.loc["a", "wf10_n"] == 0
    half = stats.t.ppf(0.975, 2) * np.std([10.0, 12.0, 11.0], ddof=1) / np.sqrt(3)
    assert table.loc["a", "s/run ↓"] == f"11.0 ± {half:.1f}"
    # a CI that leaves [0, 100] says so; the shown decimals are the column's (one format per column)
    assert table.loc["a", "% dips unrecovered ↓"].endswith("†")
    assert table.loc["a", "ACC ↑"] == f"60.0 ± {100 * stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3):.1f}"
    # the gap against its floor; a row whose dips never came back has forgetting, not a small gap
    assert table.loc["a", "gap vs noise"] == "above noise"
    assert table.loc["b", "gap depth ↓"] == "n/a" and table.loc["b", "gap vs noise"].startswith("no gap")
    assert table.loc["b", "WF10 vs noise"] == "above noise" and table.loc["a", "WF10 vs noise"] == "n/a"
    assert table.loc["b", "WF10 noise floor"] == "2.0 ± 0.0"
    # identical paired differences: the t-test is undefined, not "worse (p=0)"
    assert lb.loc["b", "acc_vs_reference"] == "n/a" and np.isnan(lb.loc["b", "acc_p_vs_reference"])


def test_runs_csv_has_one_row_per_run_with_parameters_as_columns(tmp_path):
    from clbench.results.leaderboard import write_leaderboard
    from clbench.sweep.experiment import Experiment, run_experiment

    exp = Experiment(strategies=["finetune", "er"], seeds=[0, 1], iterations=3, eval_every=3, eval_subset=10,
                     params={"er": {"buffer": "class-balanced"}})
    run_experiment(exp, tmp_path, show_progress=False)
    write_leaderboard([tmp_path], tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 4 and list(runs.columns[:5]) == ["scenario", "setting", "strategy", "label", "seed"]
    assert sorted(zip(runs["strategy"], runs["seed"])) == [("er", 0), ("er", 1), ("finetune", 0), ("finetune", 1)]
    er = runs[runs["strategy"] == "er"]
    assert (er["param.buffer"] == "class-balanced").all() and runs["setting.iterations"].eq(3).all()
    assert "params" not in runs and "settings" not in runs and runs["acc"].between(0, 1).all()


def test_the_latex_table_for_a_paper_has_the_chosen_columns_and_bolds_the_best():
    from clbench.results.aggregate import leaderboard
    from clbench.results.tables import paper_table, to_latex

    runs = _runs([
        {"strategy": "a", "seed": 0, "acc": 0.50, "bwt": -0.10, "gap_depth": 0.30},
        {"strategy": "a", "seed": 1, "acc": 0.60, "bwt": -0.12, "gap_depth": float("nan")},
        {"strategy": "b", "seed": 0, "acc": 0.70, "bwt": -0.20, "gap_depth": 0.40},
        {"strategy": "b", "seed": 1, "acc": 0.72, "bwt": -0.22, "gap_depth": 0.44},
    ])
    table = paper_table(leaderboard(runs), ["acc", "bwt", "gap_depth"])
    # scenario, setting and params are the same in every row: left out
    assert list(table.columns) == ["strategy", "ACC ↑", "BWT ↑", "gap depth ↓"]
    rows = table.set_index("strategy")
    assert rows.loc["b", "ACC ↑"].startswith("⟦71.0") and not rows.loc["a", "ACC ↑"].startswith("⟦")
    assert rows.loc["a", "BWT ↑"].startswith("⟦−11.0")  # a minus sign, not a hyphen
    # a's gap depth is the mean of one run of two: no best; b's is
    assert rows.loc["b", "gap depth ↓"].startswith("⟦") and "(1/2 runs)" in rows.loc["a", "gap depth ↓"]
    latex = to_latex(table, "Two methods.", "tab:x")
    assert r"\textbf{71.0" in latex and r"$-$11.0" in latex and r"\label{tab:x}" in latex and "⟦" not in latex


def test_report_metrics_choose_the_columns_of_every_format(capsys, three_seeds):
    assert entry(["report", str(three_seeds), "--metrics", "acc,min-acc,wc-acc,bwt", "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    metric_columns = [c for c in header.split(",") if "↑" in c or "↓" in c]
    assert metric_columns == ["ACC ↑", "min-ACC ↑", "WC-ACC ↑", "BWT ↑"]
    assert entry(["report", str(three_seeds), "--metrics", "acc,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_an_own_strategy_is_labelled_by_the_name_its_class_sets():
    from clbench.run.record import strategy_label
    from clbench.strategies import Finetune

    class Named(Finetune):
        name = "my-method"

    class Unnamed(Finetune):
        pass

    assert strategy_label("mystrats:Named", Named.__new__(Named)) == "my-method"
    assert strategy_label("mystrats:Unnamed", Unnamed.__new__(Unnamed)) == "mystrats:Unnamed"  # not "finetune"
    assert strategy_label("finetune", Finetune.__new__(Finetune)) == "finetune"


def test_an_experiment_toml_chooses_the_report_s_metrics(capsys, three_seeds, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(three_seeds, folder)
    toml = folder / "experiment.toml"
    toml.write_text(toml.read_text() + '\nmetrics = ["acc", "wc-acc"]\n' if "metrics" not in toml.read_text()
                    else toml.read_text().replace("metrics = []", 'metrics = ["acc", "wc-acc"]'))
    assert entry(["report", str(folder), "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert [c for c in header.split(",") if "↑" in c or "↓" in c] == ["ACC ↑", "WC-ACC ↑"]
    assert "min-ACC" not in (folder / "leaderboard.md").read_text().split("\n\n")[2]
    toml.write_text(toml.read_text().replace('"wc-acc"', '"wcacc"'))
    assert entry(["report", str(folder)]) == 2 and "wcacc" in capsys.readouterr().err


#: the text width of LaTeX's one-column article, in points
ARTICLE_TEXT_WIDTH = 345.0


def _estimated_width(tex: str) -> float:
    """The tabular's width at \\small, from its widest cell per column: 5.0 pt a character (10pt
    Computer Modern digits are 5 pt; \\small is 9 pt, so this overestimates) plus the column gaps."""
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    rows = [re.split(r"(?<!\\)&", line.rstrip("\\ ")) for line in body.splitlines()[1:] if line.strip()]

    def chars(cell: str) -> int:
        cell = re.sub(r"\\textbf\{(.*)\}", r"\1", cell.strip())
        cell = re.sub(r"\$\\pm\\,\$", "±", cell).replace(r"$^\dagger$", "†").replace("$-$", "-")
        return len(re.sub(r"\\[a-z]+\{?|\{|\}", "", cell))

    widest = [max(chars(r[k]) for r in rows) for k in range(len(rows[0]))]
    gaps = 2 * 3.0 * (1 + (len(widest) - 1) // 2)  # 3pt either side of each column (mean | ± CI share one pair)
    return 5.0 * sum(widest) + gaps


def test_the_default_paper_table_fits_a_one_column_page(capsys, three_seeds, tmp_path):
    """Compiled with pdflatex where one is installed (no overfull box), else measured: at most the
    article's text width, from each column's widest cell."""
    import shutil

    assert entry(["report", str(three_seeds), "--format", "latex", "--out", str(tmp_path)]) == 0
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert tex.count(r"\multicolumn{2}") == 5  # the default metric set: ACC, min-ACC, FORG, gap depth, GFLOP
    assert _estimated_width(tex) <= ARTICLE_TEXT_WIDTH
    if shutil.which("pdflatex"):
        (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                          + tex + "\\end{document}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]
        assert "Overfull" not in (tmp_path / "doc.log").read_text()


def test_a_table_says_when_its_runs_were_not_evaluated_at_every_iteration(capsys, tmp_path):
    """WF10's header means every-iteration WF10: under a schedule that skipped iterations the table
    says it is a lower bound (and AAA an estimate); every-iteration runs get no such note."""
    from tests.helpers import invoke, tiny

    sparse, every = tmp_path / "sparse", tmp_path / "every"
    assert invoke(capsys, "run", *tiny("finetune", "0,1", 6, 3), "--eval-schedule", "periodic", "--out",
                  str(sparse))[0] == 0
    assert invoke(capsys, "run", *tiny("finetune", "0", 6, 1), "--eval-schedule", "periodic", "--out",
                  str(every))[0] == 0
    summary = json.loads((sparse / "runs/split-digits/finetune/seed0/summary.json").read_text())
    assert summary["evaluated_every_iteration"] is False
    md = (sparse / "leaderboard.md").read_text()
    assert "finetune (2 of 2 runs) not evaluated at every iteration" in md and "lower bounds" in md
    assert "not evaluated at every iteration" not in (every / "leaderboard.md").read_text()
    # runs kept from before the field was recorded: read from their curves
    for root in (sparse, every):
        path = root / "runs/split-digits/finetune/seed0/summary.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items()
                                    if k != "evaluated_every_iteration"}))
    assert write_leaderboard([sparse], sparse)["n_sparse"].tolist() == [2]
    assert write_leaderboard([every], every)["n_sparse"].tolist() == [0]
