"""The leaderboard as people read it: cells with their units and ±, and the text, Markdown,
LaTeX and CSV renderings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from clbench.common.errors import InputError
from clbench.results.columns import ACCURACY_LIKE, BETTER, COST, DECIMALS, LABELS, RANGE, VERDICTS


def _cost_cell(mean: float, metric: str) -> str:
    """A measured cost's mean (``_cell`` says "unknown" where it was not: never a 0 that reads "free")."""
    if metric == "train_flops":
        return f"{mean / 1e9:,.1f}"
    if metric == "memory_bytes":
        return f"{mean / 1e6:,.3f}"
    if metric in ("memory_samples", "trainable_params"):
        return f"{int(round(mean)):,}"
    return f"{mean:.3g}"


def _cell(mean: float, ci: float, metric: str, n: int | None = None, runs: int | None = None) -> str:
    """``mean ± CI`` in the column's one format; ``†`` where the interval leaves the metric's range;
    ``(k/N runs)`` where only k of the row's N runs measured it; ``n/a`` where none did."""
    if np.isnan(mean):
        return "unknown" if metric in COST and metric != "wall_seconds" else "n/a"
    if metric in COST and metric != "wall_seconds":
        text = _cost_cell(mean, metric)
    else:
        scale = 100.0 if metric in ACCURACY_LIKE else 1.0
        decimals = DECIMALS.get(metric, 1 if metric in ACCURACY_LIKE else 3)
        text = f"{mean * scale:.{decimals}f}"
        if not np.isnan(ci):
            text += f" ± {ci * scale:.{decimals}f}"
            lo, hi = RANGE.get(metric, (-np.inf, np.inf))
            if mean - ci < lo - 1e-12 or mean + ci > hi + 1e-12:
                text += " †"
    if n is not None and runs is not None and n < runs:
        text += f" ({n}/{runs} runs)"
    return text


def people_table(lb: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard for people: accuracies in percent with one decimal, mean ± the 95% confidence
    interval over seeds in every column but the cost ones (their mean), the count of runs behind a
    cell where it is below the row's, the gap's and WF10's verdicts against their noise floors, ↑/↓
    for which way is better, the setting and parameters of each row, the ACC test-set SE and the paired test against the
    reference row."""
    metrics = metrics or ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "wf10", "wf10_noise", "gap_depth",
                          "gap_noise", "gap_iters_to_recover", "gap_unrecovered", "drop_kept", *COST]
    t = lb[["scenario", "strategy"]].copy()
    if "label" in lb:
        t["strategy"] = lb["label"].fillna(lb["strategy"])
    t["setting"] = lb["setting"] if "setting" in lb else ""
    t["params"] = [_params_cell(p, own) for p, own in zip(lb.get("params", pd.Series("{}", index=lb.index)),
                                                            _own_settings(lb))]
    t["runs"] = [_runs_cell(r) for r in lb.itertuples()]
    for m in metrics:
        spread = lb[f"{m}_ci95"] if f"{m}_ci95" in lb else pd.Series(np.nan, index=lb.index)
        counts = lb[f"{m}_n"] if f"{m}_n" in lb else pd.Series([None] * len(lb), index=lb.index)
        runs = lb["n_runs"] if "n_runs" in lb else pd.Series([None] * len(lb), index=lb.index)
        t[_header(m)] = [_cell(a, b, m, k, r) for a, b, k, r in zip(lb[f"{m}_mean"], spread, counts, runs)]
        if m in VERDICTS and VERDICTS[m][0] in lb:
            t[VERDICTS[m][1]] = lb[VERDICTS[m][0]]
        if m == "acc":
            if "acc_test_se_mean" in lb:
                t["ACC test-set SE"] = [_cell(v, float("nan"), "acc_test_se") for v in lb["acc_test_se_mean"]]
            if "acc_vs_reference" in lb:
                t["ACC vs reference"] = [_versus_cell(v, p) for v, p in zip(lb["acc_vs_reference"],
                                                                               lb["acc_p_vs_reference"])]
    if "acc_order_std" in lb:
        t.insert(3, "orderings", lb["n_orderings"])
        t["ACC across orderings (std, min-max)"] = [
            f"{100 * s:.1f}, {100 * lo:.1f}-{100 * hi:.1f}"
            for s, lo, hi in zip(lb["acc_order_std"], lb["acc_order_min"], lb["acc_order_max"])]
        t["rank changes"] = [f"{int(c)}/{int(n)} (ranks {int(b)}-{int(w)})" for c, n, b, w in
                             zip(lb["rank_changes"], lb["n_orderings"], lb["rank_best"], lb["rank_worst"])]
    return t


def _header(metric: str) -> str:
    return f"{LABELS[metric]} {BETTER[metric]}" if metric in BETTER else LABELS[metric]


def _params_cell(params: str, own: dict) -> str:
    values = {**(json.loads(params) if isinstance(params, str) and params else {}), **own}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "defaults"




def _own_settings(lb: pd.DataFrame) -> list[dict]:
    """Per row, its optimiser settings that are not the scenario's defaults (a tuned or published lr):
    shown beside the parameters, since they change the numbers as much."""
    return [json.loads(v) if isinstance(v, str) and v else {}
            for v in lb.get("own_settings", pd.Series("", index=lb.index))]


def _versus_cell(verdict: str, p: float) -> str:
    if verdict in ("reference", "n/a", ""):
        return verdict or "n/a"
    return f"{verdict} (p={p:.2g})"


def _runs_cell(row) -> str:
    """Runs behind a row, with the diverged and failed ones said where there are any."""
    notes = [f"{row.n_diverged} DIVERGED"] if getattr(row, "n_diverged", 0) else []
    notes += [f"{row.n_failed} FAILED"] if getattr(row, "n_failed", 0) else []
    return f"{row.n_runs}" + (f" ({', '.join(notes)})" if notes else "")


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_text(table: pd.DataFrame) -> str:
    return table.to_string(index=False)


#: unicode of the people table that LaTeX's text mode lacks, as math (after escaping); the minus
#: sign of a number and the marks of a best value are put in by ``paper_table``
LATEX_SYMBOLS = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "†": r"$^\dagger$", "−": r"$-$",
                 "⟦": r"\textbf{", "⟧": "}"}
#: the columns of a table for a paper (``--metrics`` chooses others): accuracy, forgetting, the
#: stability gap apart from forgetting, and cost beside them: five fit the text width of a one-column
#: article (345 pt, measured with pdflatex); eight (adding WC-ACC, % dips unrecovered, memory) need a
#: two-column page's full width (``table*``)
PAPER_COLUMNS = ["acc", "min_acc", "forgetting", "gap_depth", "train_flops"]


def paper_columns(text: str | None) -> list[str] | None:
    """``--metrics``: metric names, comma-separated, as ``clbench list metrics`` spells them or with
    hyphens (``min-acc``), checked (None: each format's default)."""
    if not text:
        return None
    chosen = [c.strip().lower().replace("-", "_") for c in text.split(",") if c.strip()]
    unknown = [m for m in chosen if m not in LABELS or m.endswith("_se")]
    if unknown or not chosen:
        raise InputError(f"unknown column(s) {', '.join(unknown) or text!r}; choose from "
                         f"{', '.join(m for m in LABELS if not m.endswith('_se'))}")
    return chosen


def default_caption(lb: pd.DataFrame) -> str:
    """What a table holds, for its caption: the scenarios and the seeds behind each row."""
    scenarios = ", ".join(dict.fromkeys(str(s) for s in lb["scenario"]))
    runs = sorted({int(n) for n in lb.get("n_runs", pd.Series(dtype=int)).dropna()})
    per_row = (f"{runs[0]} runs" if len(runs) == 1 else f"{runs[0]}-{runs[-1]} runs") if runs else "the runs"
    return (f"{scenarios}: mean ± 95% confidence interval over {per_row} per row, accuracies in percent; "
            "best value of each column in bold.")


def paper_table(lb: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """The people table cut for a paper: the chosen metric columns only (``PAPER_COLUMNS`` by
    default), the scenario, setting and parameter columns only where rows differ in them, numbers
    with a minus sign rather than a hyphen, and the best value of each column marked bold (among
    rows with no diverged run whose every run measured it, by the column's direction; ties all)."""
    metrics = metrics or PAPER_COLUMNS
    full = people_table(lb, metrics)
    keep = [c for c in ("scenario", "strategy", "setting", "params")
            if c == "strategy" or full[c].nunique() > 1]
    t = full[keep + [_header(m) for m in metrics]].copy()
    healthy = lb["n_diverged"].eq(0) if "n_diverged" in lb else pd.Series(True, index=lb.index)
    for m in metrics:
        column = _header(m)
        t[column] = t[column].str.replace(r"(?<![\w.])-(?=\d)", "−", regex=True)
        # a mean over every run of the row (a survivors' mean is no best)
        whole = lb[f"{m}_n"].eq(lb["n_runs"]) if f"{m}_n" in lb and "n_runs" in lb else True
        means = pd.to_numeric(lb[f"{m}_mean"], errors="coerce").where(healthy & whole)
        if BETTER.get(m) and means.notna().any():
            best = means.max() if BETTER[m] == "↑" else means.min()
            for row in means.index[means == best]:  # ties all bold
                t.loc[row, column] = f"⟦{t.loc[row, column]}⟧"
    return t


#: LaTeX's special characters in text
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
TEXT_COLUMNS = ("scenario", "strategy", "setting", "params")


def _latex_text(value) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(value))
    for symbol, latex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def _latex_number(cell: str) -> tuple[str, str]:
    """A metric cell as two LaTeX cells, the mean (right-aligned) and what follows it (± CI, marks;
    left-aligned), so the decimal points of a column line up; bold (``⟦…⟧``) on both."""
    bold = cell.startswith("⟦") and cell.endswith("⟧")
    cell = cell.strip("⟦⟧")
    mean, _, rest = cell.partition(" ")
    # ± and † close to their number (a thin space after ±): the column stays narrow
    rest = _latex_text(rest.replace("± ", "±").replace(" †", "†")).replace(r"$\pm$", r"$\pm\,$").strip()
    parts = [_latex_text(mean), rest]
    return tuple(rf"\textbf{{{p}}}" if bold and p else p for p in parts)


def _latex_header(name: str) -> str:
    """A metric's header, on two lines when it is longer than its numbers are wide (split at the
    space nearest its middle), so headers do not set the table's width."""
    words = name.split(" ")
    if len(name) <= 10 or len(words) < 2:
        return _latex_text(name)
    cut = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k])) - len(name) / 2))
    lines = [_latex_text(" ".join(words[:cut])), _latex_text(" ".join(words[cut:]))]
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\".join(lines) + r"\end{tabular}"


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs table that compiles as it is (with \\usepackage{booktabs}): text escaped, ±, ↑, ↓
    and † as math, each metric column split at its mean so the decimal points line up, the best
    values bold; with a caption, a table float with ``label``."""
    text_cols = [c for c in table.columns if c in TEXT_COLUMNS]
    metric_cols = [c for c in table.columns if c not in TEXT_COLUMNS]
    spec = "l" * len(text_cols) + "".join(r"r@{\,}l" for _ in metric_cols)
    head = [_latex_text(c) for c in text_cols] + [rf"\multicolumn{{2}}{{c}}{{{_latex_header(c)}}}" for c in metric_cols]
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for _, row in table.iterrows():
        cells = [_latex_text(row[c]) for c in text_cols]
        for c in metric_cols:
            cells += _latex_number(str(row[c]))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    body = "\n".join(lines) + "\n"
    # compact (small type, 3pt between columns): a paper's default table, eight metric columns, fits
    # the text width of a one-column page; inside a group, so nothing after the table changes
    compact = r"\small\setlength{\tabcolsep}{3pt}"
    if not caption:
        return "{" + compact + "%\n" + body + "}\n"
    return (r"\begin{table}[t]" + "\n" + r"\centering" + compact + "\n" + rf"\caption{{{_latex_text(caption)}}}"
            + "\n" + (rf"\label{{{label}}}" + "\n" if label else "") + body + r"\end{table}" + "\n")


def render(table: pd.DataFrame, fmt: str, caption: str | None = None, label: str | None = None) -> str:
    """The people table as ``text``, ``markdown``, ``latex`` or ``csv``."""
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table, caption, label)
    if fmt == "csv":
        return table.to_csv(index=False)
    return to_text(table)
