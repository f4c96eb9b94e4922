"""The results table: average accuracy per agent (rows) and dataset x scenario (x fidelity) (columns).

Cells read "mean ± SEM (n)" of the average accuracy over tasks (summary columns ``avg_mean``, ``avg_sem``,
``n_runs``). When the summary holds both fidelities (reference and corrected), each dataset x scenario gets one
column per fidelity, side by side; imported rows (fidelity ``published``) are shown in every fidelity column of
their dataset x scenario. The best mean of each column is marked (bold in Markdown and LaTeX, ``best`` in the CSV);
the bounds (lower_bound, upper_bound) are not candidates, since they are references rather than methods. The
caption names the run filter.

Cells whose runs started from random weights (``weights: none``; summary column ``random_init``) carry a marker and
a note under the table: ``†`` random-init front, ``‡`` random-init front that was also frozen
(``freeze_feature_extract``; summary column ``random_frozen_front``), as AugMem's is: its features stay random.
Cells where AugMem's memory collapsed in at least one run (metrics.json ``health_verdict``; summary columns
``n_collapsed`` of ``n_health`` runs, ``n_shared_codes`` / ``n_uniform_reads`` per regime) carry ``§`` (after a
``†`` / ``‡``), and the note under the table gives each such cell's counts: its memory path does not carry
hypotheses. The counts are over all the cell's runs (before the run filter, like the other marks).

Cells whose runs carry notes (metrics.json ``meta.notes``; summary column ``notes``), such as the variant a reference
external baseline runs where its adapted code cannot run as published, carry ``¶``, and the note under the table
names the agent, the columns and the note.

The CSV form holds the numbers: a ``# caption`` comment line (then one ``# note`` line per marker used), then one
row per agent with ``agent``, ``label``, ``imported`` and, per column ``C`` (``dataset/scenario[/fidelity]``),
``C|mean``, ``C|sem``, ``C|n``, ``C|best``, ``C|random_init``, ``C|random_frozen_front``, ``C|collapsed`` and the
counts behind the ``§`` note, ``C|n_collapsed``, ``C|n_health``, ``C|n_shared_codes``, ``C|n_uniform_reads`` (empty
for cells without health), and ``C|notes`` (the ``¶`` notes, "; "-joined). ``read_table_csv`` reads it back (a CSV written before the flag or count columns existed
reads them as False / empty) and ``to_markdown`` renders it, so CSV -> Markdown gives the same numbers and marks.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmem.io import InputError
from augmem.results.aggregate import IMPORTED_FIDELITY
from augmem.results.style import BOUNDS, agent_label, is_imported, sort_agents

#: per-cell health counts (summary columns of the same names): runs with a verdict, collapsed, per regime
HEALTH_COUNTS = ("n_collapsed", "n_health", "n_shared_codes", "n_uniform_reads")
STATS = ("mean", "sem", "n", "best", "random_init", "random_frozen_front", "collapsed", *HEALTH_COUNTS, "notes")
#: statistics a CSV written before they existed may lack (flags read as False, counts and notes as empty)
OPTIONAL_STATS = ("random_init", "random_frozen_front", "collapsed", *HEALTH_COUNTS, "notes")
#: cell markers and the notes under the table
RANDOM_INIT_MARK = "†"
RANDOM_FROZEN_MARK = "‡"
COLLAPSED_MARK = "§"
NOTE_MARK = "¶"
#: the end of the collapse note (its counts come first, per cell: ``ResultsTable.collapse_note``)
COLLAPSED_NOTE = "its memory path does not carry hypotheses; see metrics.json `health`."
NOTES = {
    RANDOM_INIT_MARK: "random-init front (weights: none): these runs started from random weights, not from a "
                      "pre-trained network.",
    RANDOM_FROZEN_MARK: "random-init front (weights: none), frozen (freeze_feature_extract): the front never learns, "
                        "so its features stay random for the whole run.",
}


@dataclass
class ResultsTable:
    """Agents x columns of mean, SEM, n and best flags, with a caption."""

    agents: list[str]
    columns: list[str]  # "dataset/scenario" or "dataset/scenario/fidelity"
    mean: pd.DataFrame
    sem: pd.DataFrame
    n: pd.DataFrame
    best: pd.DataFrame
    caption: str
    labels: dict = field(default_factory=dict)
    random_init: pd.DataFrame | None = None  # agents x columns, True where a run started from random weights
    random_frozen_front: pd.DataFrame | None = None  # ... and that random front was frozen
    collapsed: pd.DataFrame | None = None  # agents x columns, True where AugMem's memory collapsed in some run
    health: dict = field(default_factory=dict)  # HEALTH_COUNTS name -> agents x columns (Int64, <NA>: no health)
    run_notes: pd.DataFrame | None = None  # agents x columns, the cell's notes ("; "-joined, '' for none)

    def marks(self, agent: str, column: str) -> list[str]:
        """The cell's markers: ``‡`` frozen random front or ``†`` random-init front, then ``§`` collapsed memory."""
        out = []
        if self.random_frozen_front is not None and bool(self.random_frozen_front.loc[agent, column]):
            out.append(RANDOM_FROZEN_MARK)
        elif self.random_init is not None and bool(self.random_init.loc[agent, column]):
            out.append(RANDOM_INIT_MARK)
        if self.collapsed is not None and bool(self.collapsed.loc[agent, column]):
            out.append(COLLAPSED_MARK)
        if self.cell_notes(agent, column):
            out.append(NOTE_MARK)
        return out

    def cell_notes(self, agent: str, column: str) -> list[str]:
        if self.run_notes is None:
            return []
        text = self.run_notes.loc[agent, column]
        return [n for n in str(text).split("; ") if n] if isinstance(text, str) else []

    def note_lines(self) -> list[str]:
        """The ``¶`` notes: per agent and note, the columns it applies to."""
        found: dict[tuple[str, str], list[str]] = {}
        for a in self.agents:
            for c in self.columns:
                for note in self.cell_notes(a, c):
                    found.setdefault((a, note), []).append(_header(c))
        return [f"{NOTE_MARK} {self.labels.get(a, agent_label(a))} ({', '.join(cols)}): {note}"
                for (a, note), cols in found.items()]

    def mark(self, agent: str, column: str) -> str:
        """The cell's markers as one string (``‡§``, ``†``, ``§``, ...; '' for none)."""
        return "".join(self.marks(agent, column))

    def count(self, name: str, agent: str, column: str) -> int | None:
        """A health count of one cell (HEALTH_COUNTS), None when unknown."""
        frame = self.health.get(name)
        value = frame.loc[agent, column] if frame is not None else None
        return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) \
            else int(value)

    def collapse_note(self) -> str | None:
        """The ``§`` note: per marked cell, how many of its runs collapsed and in which regime; None when no cell is
        marked."""
        parts = []
        for c in self.columns:
            for a in self.agents:
                if COLLAPSED_MARK not in self.marks(a, c):
                    continue
                n, m = self.count("n_collapsed", a, c), self.count("n_health", a, c)
                runs = (f"{n} of {m} runs" if m is not None else f"{n} runs") if n is not None else "some runs"
                shared, uniform = self.count("n_shared_codes", a, c), self.count("n_uniform_reads", a, c)
                regimes = "" if shared is None or uniform is None else \
                    f" (shared codes: {shared} / uniform reads: {uniform})"
                parts.append(f"{runs} of {self.labels.get(a, agent_label(a))}, {_header(c)}{regimes}")
        return f"{COLLAPSED_MARK} AugMem's memory collapsed in {'; '.join(parts)}: {COLLAPSED_NOTE}" if parts else None

    def notes(self) -> list[str]:
        """'<marker> <note>' for every marker some cell carries, in a fixed order."""
        used = {m for a in self.agents for c in self.columns for m in self.marks(a, c)}
        notes = [f"{m} {NOTES[m]}" for m in (RANDOM_INIT_MARK, RANDOM_FROZEN_MARK) if m in used]
        collapse = self.collapse_note()
        return notes + ([collapse] if collapse else []) + self.note_lines()


def _fidelity_order(fidelities) -> list[str]:
    """reference, corrected, then any other fidelity alphabetically."""
    rank = {"reference": 0, "corrected": 1}
    return sorted({str(f) for f in fidelities}, key=lambda f: (rank.get(f, 2), f))


def _column_keys(summary: pd.DataFrame) -> tuple[list[str], bool]:
    own = summary[~summary["imported"].astype(bool)]
    fidelities = _fidelity_order(own["fidelity"].dropna().unique())
    by_fidelity = len(fidelities) > 1
    keys = []
    pairs = summary[["dataset", "scenario"]].drop_duplicates().sort_values(["dataset", "scenario"])
    for dataset, scenario in pairs.itertuples(index=False):
        if by_fidelity:
            keys.extend(f"{dataset}/{scenario}/{f}" for f in fidelities)
        else:
            keys.append(f"{dataset}/{scenario}")
    return keys, by_fidelity


def build_table(summary: pd.DataFrame, exclude_from_best=BOUNDS) -> ResultsTable:
    """ResultsTable of the average accuracy from a summary (``aggregate.summarise`` / summary.csv)."""
    if summary.empty:
        raise InputError("summary is empty: no results to tabulate")
    columns, by_fidelity = _column_keys(summary)
    own_fids = _fidelity_order(summary.loc[~summary["imported"].astype(bool), "fidelity"].dropna().unique())
    agents = sort_agents(summary["agent"])
    mean = pd.DataFrame(np.nan, index=agents, columns=columns)
    sem = mean.copy()
    n = pd.DataFrame(0, index=agents, columns=columns, dtype=int)
    present = pd.DataFrame(False, index=agents, columns=columns)
    random_init = pd.DataFrame(False, index=agents, columns=columns)
    random_frozen = pd.DataFrame(False, index=agents, columns=columns)
    collapsed = pd.DataFrame(False, index=agents, columns=columns)
    health = {k: pd.DataFrame(pd.NA, index=agents, columns=columns, dtype="Int64") for k in HEALTH_COUNTS}
    run_notes = pd.DataFrame("", index=agents, columns=columns, dtype=object)
    for r in summary.itertuples(index=False):
        flags = r._asdict()
        if by_fidelity:
            fids = own_fids if r.fidelity == IMPORTED_FIDELITY else [r.fidelity]
            cols = [f"{r.dataset}/{r.scenario}/{f}" for f in fids]
        else:
            cols = [f"{r.dataset}/{r.scenario}"]
        for c in cols:
            if present.loc[r.agent, c]:
                raise InputError(f"summary has two rows for agent {r.agent!r} in column {c!r}")
            present.loc[r.agent, c] = True
            mean.loc[r.agent, c] = r.avg_mean
            sem.loc[r.agent, c] = r.avg_sem
            n.loc[r.agent, c] = int(r.n_runs)
            random_init.loc[r.agent, c] = _flag(flags.get("random_init"))
            random_frozen.loc[r.agent, c] = _flag(flags.get("random_frozen_front"))
            for k in HEALTH_COUNTS:
                health[k].loc[r.agent, c] = _count(flags.get(k))
            collapsed.loc[r.agent, c] = (_count(flags.get("n_collapsed")) or 0) > 0
            note = flags.get("notes")
            run_notes.loc[r.agent, c] = note if isinstance(note, str) else ""
    best = pd.DataFrame(False, index=agents, columns=columns)
    candidates = [a for a in agents if a not in set(exclude_from_best)]
    for c in columns:
        col = mean.loc[candidates, c].dropna()
        if not col.empty:
            best.loc[col.index[np.isclose(col.to_numpy(), col.max(), rtol=0, atol=1e-9)], c] = True
    filters = sorted(summary.loc[~summary["imported"].astype(bool), "run_filter"].dropna().unique().tolist()) \
        or sorted(summary["run_filter"].dropna().unique().tolist())
    caption = ("Average accuracy over tasks (%), mean ± SEM over runs (n runs); per run the mean over tasks of the "
               "accuracy on all seen classes. Bold: best per column (bounds excluded). Run filter: "
               + "; ".join(filters) + ".")
    return ResultsTable(agents, columns, mean, sem, n, best, caption, {a: agent_label(a) for a in agents},
                        random_init, random_frozen, collapsed, health, run_notes)


def _count(value) -> int | None:
    """A summary count (int, float, numeric text; NaN/None/<NA>/'' where a cell has none) as int or None."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    return int(float(value))


def _flag(value) -> bool:
    """A summary flag (bool, 'True'/'False' text, or NaN/None where a summary lacks it) as a bool."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _fmt(mean: float, sem: float, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return f"— ({n})" if n else "—"
    sem_txt = "—" if sem is None or math.isnan(sem) else f"{sem:.1f}"
    return f"{mean:.1f} ± {sem_txt} ({n})"


def _header(col: str) -> str:
    return " ".join(col.split("/")[:2]) + (f" ({col.split('/')[2]})" if col.count("/") == 2 else "")


def to_markdown(table: ResultsTable) -> str:
    """Markdown table (best per column in bold) followed by the caption line."""
    head = ["Agent"] + [_header(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":---:"] * len(table.columns)) + "|"]
    for a in table.agents:
        cells = [table.labels.get(a, agent_label(a))]
        for c in table.columns:
            text = _fmt(table.mean.loc[a, c], table.sem.loc[a, c], int(table.n.loc[a, c]))
            text = f"**{text}**" if table.best.loc[a, c] else text
            mark = table.mark(a, c)
            cells.append(f"{text} {mark}" if mark else text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = "".join(f"\n{note}\n" for note in table.notes())
    return "\n".join(lines) + "\n\n" + table.caption + "\n" + notes


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "β": r"$\beta$", "—": "---", RANDOM_INIT_MARK: r"$^\dagger$",
        RANDOM_FROZEN_MARK: r"$^\ddagger$", COLLAPSED_MARK: r"$^\S$", NOTE_MARK: r"$^\P$"}


def _tex(text: str) -> str:
    """Escape LaTeX special characters; `code` spans become \\texttt{code}."""
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", "".join(_TEX.get(ch, ch) for ch in str(text)))


def _tex_marks(marks: list[str]) -> str:
    """A cell's markers as one superscript (``$^\\dagger$``; ``$^{\\ddagger\\S}$`` for two: ``$$`` would open display
    math)."""
    if len(marks) < 2:
        return "".join(_TEX[m] for m in marks)
    return "$^{" + "".join(_TEX[m][2:-1] for m in marks) + "}$"


def to_latex(table: ResultsTable) -> str:
    """LaTeX tabular (booktabs) with grouped dataset / scenario (/ fidelity) headers and the caption."""
    parts = [c.split("/") for c in table.columns]
    depth = len(parts[0]) if parts else 2
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * len(parts) + "}",
             r"\toprule"]
    for level in range(depth):
        cells, i = ["Agent" if level == depth - 1 else ""], 0
        rules = []
        while i < len(parts):
            j = i
            while j < len(parts) and parts[j][: level + 1] == parts[i][: level + 1]:
                j += 1
            span = j - i
            name = _tex(parts[i][level])
            cells.append(name if span == 1 else rf"\multicolumn{{{span}}}{{c}}{{{name}}}")
            if level < depth - 1:
                rules.append(rf"\cmidrule(lr){{{i + 2}-{j + 1}}}")
            i = j
        lines.append(" & ".join(cells) + r" \\")
        if rules:
            lines.append(" ".join(rules))
    lines.append(r"\midrule")
    for a in table.agents:
        cells = [_tex(table.labels.get(a, agent_label(a)))]
        for c in table.columns:
            m, s, n = table.mean.loc[a, c], table.sem.loc[a, c], int(table.n.loc[a, c])
            mark = _tex_marks(table.marks(a, c))
            if isinstance(m, float) and math.isnan(m):
                cells.append("--" + mark)
                continue
            s_txt = "--" if math.isnan(s) else f"{s:.1f}"
            text = f"{m:.1f} $\\pm$ {s_txt} ({n})"
            cells.append((rf"\textbf{{{text}}}" if table.best.loc[a, c] else text) + mark)
        lines.append(" & ".join(cells) + r" \\")
    caption = " ".join([table.caption, *table.notes()])
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}", r"\label{tab:results}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv_text(table: ResultsTable) -> str:
    """The CSV form (see the module docstring); floats are written exactly (repr), so reading back is lossless."""
    data = {"agent": table.agents, "label": [table.labels.get(a, agent_label(a)) for a in table.agents],
            "imported": [is_imported(a) for a in table.agents]}
    for c in table.columns:
        data[f"{c}|mean"] = table.mean[c].to_numpy()
        data[f"{c}|sem"] = table.sem[c].to_numpy()
        data[f"{c}|n"] = table.n[c].to_numpy()
        data[f"{c}|best"] = table.best[c].to_numpy()
        for stat, flags in (("random_init", table.random_init), ("random_frozen_front", table.random_frozen_front),
                            ("collapsed", table.collapsed)):
            data[f"{c}|{stat}"] = flags[c].to_numpy() if flags is not None else False
        for stat in HEALTH_COUNTS:
            counts = table.health.get(stat)
            data[f"{c}|{stat}"] = counts[c].array if counts is not None else pd.array([pd.NA] * len(table.agents),
                                                                                      dtype="Int64")
        data[f"{c}|notes"] = table.run_notes[c].to_numpy() if table.run_notes is not None else ""
    buf = io.StringIO()
    buf.write("# " + table.caption.replace("\n", " ") + "\n")
    for note in table.notes():
        buf.write("# " + note + "\n")
    pd.DataFrame(data).to_csv(buf, index=False)
    return buf.getvalue()


def read_table_csv(path: str | Path) -> ResultsTable:
    """Read the CSV form back into a ResultsTable (InputError naming the file when it is malformed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    text = path.read_text()
    first, _, rest = text.partition("\n")
    if not first.startswith("# "):
        raise InputError(f"{path}: line 1 must be the '# caption' line")
    while rest.startswith("# "):  # the notes under the table: rebuilt from the flag columns
        rest = rest.partition("\n")[2]
    df = pd.read_csv(io.StringIO(rest), dtype={"agent": str, "label": str})
    if "agent" not in df.columns:
        raise InputError(f"{path}: missing column 'agent'")
    columns = []
    for col in df.columns:
        if "|" in col:
            base, stat = col.rsplit("|", 1)
            if stat not in STATS:
                raise InputError(f"{path}: unknown statistic in column {col!r}")
            if base not in columns:
                columns.append(base)
    for c in columns:
        for stat in STATS:
            if f"{c}|{stat}" not in df.columns and stat not in OPTIONAL_STATS:
                raise InputError(f"{path}: column {c!r} lacks {c}|{stat}")
    agents = df["agent"].tolist()

    def block(stat, dtype):
        out = pd.DataFrame({c: df[f"{c}|{stat}"].to_numpy() for c in columns}, index=agents)
        return out.astype(dtype)

    def flags(stat):
        return pd.DataFrame({c: df[f"{c}|{stat}"].map(_flag).to_numpy() if f"{c}|{stat}" in df.columns
                             else np.zeros(len(agents), dtype=bool) for c in columns}, index=agents, dtype=bool)

    def counts(stat):
        return pd.DataFrame({c: pd.array([_count(v) for v in df[f"{c}|{stat}"]] if f"{c}|{stat}" in df.columns
                                         else [None] * len(agents), dtype="Int64") for c in columns}, index=agents)

    def texts(stat):
        return pd.DataFrame({c: [v if isinstance(v, str) else "" for v in df[f"{c}|{stat}"]]
                             if f"{c}|{stat}" in df.columns else [""] * len(agents) for c in columns},
                            index=agents, dtype=object)

    labels = dict(zip(agents, df["label"])) if "label" in df.columns else {}
    return ResultsTable(agents, columns, block("mean", float), block("sem", float), block("n", int), flags("best"),
                        first[2:], labels, flags("random_init"), flags("random_frozen_front"), flags("collapsed"),
                        {k: counts(k) for k in HEALTH_COUNTS}, texts("notes"))
