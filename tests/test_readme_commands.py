"""Every command README.md shows runs as written, checked without doing the work; and a failed job's error reaches
Snakemake's console.

Which README text counts as a command (the extraction rule):

* every line of a fenced block labelled ``bash``, ``sh``, ``shell`` or ``console``: a trailing backslash joins the
  next line, ``#`` outside quotes starts a comment (a line that is only a comment is skipped, e.g. the ``# -> ...``
  output lines), a leading ``$ `` prompt is dropped;
* every inline code span (single backticks, also when Markdown wraps it across a line break) outside fenced blocks
  whose first word is ``snakemake``, ``dvc``, ``make`` or ``bash``, or that starts with ``python -m`` or
  ``python <file>.py``, and that has at least one argument (a bare `snakemake` names the tool).

Placeholders: ``[...]`` that starts with an option (``[--offline]``) is optional: the command is checked without and
with it; ``stages.<step>`` stands for every module in stages/. Any other ``<...>`` word fails the test (say here what
it stands for).

Not covered: other programs (``source .venv/bin/activate``, ``pip install -e .``), fragments that are not a whole
command (``--default-resources slurm_partition=...``), stage invocations written without ``python -m`` in prose
(``extract_frames --videos R --out R``), unlabelled fences (the pipeline and layout diagrams).

Checks (nothing heavy runs; nothing is written in the repository):

* ``snakemake``: in a copy of the repository (tests/workflow/helpers.copy_repo), the command as written with
  ``--dry-run --quiet rules`` appended (appended, so that no option taking several values swallows them, and the
  README's own word order is what is tested). A dry run needs every raw root to exist (Snakemake stops with a
  MissingInputException otherwise: the roots are the dirmap rules' inputs), and the README's step 2 is to set
  ``roots:``; so in the copy the ``roots`` of every params/*.yaml point at tiny trees in the real layouts, written
  by augmem.data.demo's makers. ``--report`` needs the built results: it runs as written and may fail only with
  Snakemake's "marked for report but does not exist"; ``--unlock`` and ``--lint`` run as written.
* ``python -m M`` / ``python F.py``: M (or F) runs in this process with argparse's ``parse_args`` stopped right after
  it parsed: an unknown module, option or value fails; ``--help`` must exit 0 with a usage text. ``python -m M``
  without arguments is how the README names a module (the pipeline table): M must exist.
* ``make T``: ``make -n T`` in the copy knows the target.
* ``dvc ...``: DVC's own parser accepts the words (dvc.cli.parse_args: sub-command and options exist); ``dvc repro S``
  names a stage of the committed dvc.yaml; ``dvc exp run -S FILE:KEY=V`` names a key that FILE has.
* ``bash F``: F exists and ``bash -n F`` passes.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import yaml

from workflow.helpers import REPO, SNAKEMAKE, copy_repo, env

README = REPO / "README.md"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
INLINE_TOOLS = {"snakemake", "dvc", "make", "bash"}
STAGES = sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


# ------------------------------------------------------------------------------------------------------ extraction
@dataclass(frozen=True)
class Command:
    text: str  # the command as the README writes it (placeholders not yet expanded)
    line: int  # README line where it starts

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment that starts outside quotes (after whitespace or at the start)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[Command]:
    """The README's commands, by the rule of the module docstring, in README order."""
    lines = text.splitlines()
    commands: list[Command] = []
    prose: list[str] = []  # the README with fenced blocks blanked (line numbers kept)
    fence, pending, start = None, "", 0
    for n, line in enumerate(lines, 1):
        m = re.match(r"^\s*```+\s*([\w+-]*)", line)
        if m:
            fence = None if fence is not None else (m.group(1).lower() or "")
            prose.append("")
            continue
        if fence is None:
            prose.append(line)
            continue
        prose.append("")
        if fence not in SHELL_FENCES:
            continue
        body = line.strip()
        if not pending:
            start = n
            body = body[2:] if body.startswith("$ ") else body
        body = _strip_comment(body)
        if body.endswith("\\"):
            pending += body[:-1].strip() + " "
            continue
        full = (pending + body).strip()
        pending = ""
        if full:
            commands.append(Command(full, start))
    joined = "\n".join(prose)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
        words = m.group(1).split()
        if len(words) < 2:
            continue
        if words[0] in INLINE_TOOLS or (words[0] == "python" and (words[1] == "-m" or words[1].endswith(".py"))):
            commands.append(Command(" ".join(words), joined.count("\n", 0, m.start()) + 1))
    return sorted(commands, key=lambda c: c.line)


_OPTIONAL = re.compile(r"(?<=\s)\[(-[^\[\]]*)\]")


def expand(text: str) -> list[str]:
    """The concrete commands one README command stands for (optional ``[--x]`` groups, ``stages.<step>``)."""
    variants = [text]
    while any(_OPTIONAL.search(v) for v in variants):
        nxt = []
        for v in variants:
            m = _OPTIONAL.search(v)
            if not m:
                nxt.append(v)
                continue
            without = (v[: m.start()].rstrip() + " " + v[m.end():].lstrip()).strip()
            nxt += [without, v[: m.start()] + m.group(1) + v[m.end():]]
        variants = nxt
    out = []
    for v in variants:
        if "stages.<step>" in v:
            out += [v.replace("stages.<step>", f"stages.{s}") for s in STAGES]
        else:
            out.append(v)
    for v in out:
        left = re.findall(r"<[^<>\s]+>", v)
        assert not left, f"placeholder {left} in README command {v!r}: say in this test what it stands for"
    return out


COMMANDS = readme_commands(README.read_text())
CONCRETE = list({v: (str(c), v) for c in reversed(COMMANDS) for v in expand(c.text)}.values())[::-1]  # first place


def _ids(kind: str) -> list:
    """(where, command) parameters of the README commands run by ``kind``, with ids 'L<line>:<command>'."""
    return [pytest.param(where, v, id=f"L{where.split(':')[1]}:{v}") for where, v in CONCRETE
            if shlex.split(v)[0] == kind]


def test_extraction_finds_the_readme_commands():
    """The rule finds the commands the README is known to show (a guard against an extraction that finds none)."""
    texts = [c.text for c in COMMANDS]
    assert "make demo" in texts and "make test" in texts
    assert any(t.startswith("snakemake") and "params/paper.yaml" in t for t in texts)
    assert any(t.startswith("python -m stages.filelists") for t in texts)
    assert any(t.startswith("dvc exp run") for t in texts)
    assert "python -m stages.<step> --help" in texts
    kinds = {shlex.split(v)[0] for _, v in CONCRETE}
    assert kinds <= {"snakemake", "python", "make", "dvc", "bash"}, kinds


def test_extraction_rule_on_examples():
    text = ("Run `snakemake --cores all` or `make\n demo`; `snakemake` alone is a name, `dvc.yaml` a file.\n\n"
            "```bash\nmake test   # the tests\n# -> output\npython -m stages.x --a 1 \\\n    --b 2 [--c]\n```\n"
            "```\nsnakemake in a diagram\n```\n")
    cmds = readme_commands(text)
    assert [c.text for c in cmds] == ["snakemake --cores all", "make demo", "make test",
                                      "python -m stages.x --a 1 --b 2 [--c]"]
    assert [c.line for c in cmds] == [1, 1, 5, 7]
    assert expand(cmds[-1].text) == ["python -m stages.x --a 1 --b 2", "python -m stages.x --a 1 --b 2 --c"]
    assert expand("snakemake --config 'fidelities=[reference,corrected]'") == \
        ["snakemake --config 'fidelities=[reference,corrected]'"]


# ---------------------------------------------------------------------------------------------- working copy
MAKERS = {  # layout (or its older kind name) -> demo maker writing a tiny tree in that real layout
    "core50": ("make_core50", dict(objects=5, sessions=1, frames=(10,), extra_frames=(), image_size=8)),
    "toybox": ("make_toybox", dict(categories={"animals": ["horse"]}, objects_per_category=1, image_size=16, fps=1,
                                   seconds=1, short_video=None, missing_video=None)),
    "ilab": ("make_ilab2mlight", dict(classes=("boat",), instances_per_class=1, backgrounds_per_instance=1, cameras=1,
                                      rotations=1, lightings=1, image_size=8, short_session=None)),
    "class_folders": ("make_cifar100", dict(classes=("apple",), train_per_class=1, test_per_class=1, image_size=8)),
}
MAKERS["ilab2mlight"] = MAKERS["ilab"]
MAKERS["cifar100"] = MAKERS["class_folders"]


def _fake_roots(work: Path, roots_dir: Path) -> None:
    """Point the ``roots`` of every params/*.yaml of the copy at tiny raw trees in each dataset's layout."""
    from augmem.data import demo

    datasets = yaml.safe_load((work / "params" / "datasets.yaml").read_text()) or {}
    made: dict[str, str] = {}
    for cfg in sorted((work / "params").glob("*.yaml")):
        data = yaml.safe_load(cfg.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("roots"), dict):
            continue
        for name in data["roots"]:
            if name not in made:
                entry = datasets.get(name) or {}
                layout = str(entry.get("layout") or entry.get("kind") or name)
                out = roots_dir / name
                if layout in MAKERS:
                    fn, kwargs = MAKERS[layout]
                    getattr(demo, fn)(out, jobs=1, **kwargs)
                else:
                    out.mkdir(parents=True)
                made[name] = str(out)
            data["roots"][name] = made[name]
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A copy of the repository (a git repository, as DVC wants) whose configurations' roots exist."""
    root = tmp_path_factory.mktemp("readme")
    work = copy_repo(root / "repo")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    _fake_roots(work, root / "roots")
    return work


# ------------------------------------------------------------------------------------------------------- snakemake
def _run(words: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(words, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("where, command", _ids("snakemake"))
def test_snakemake_command_dry_runs(work, where, command):
    words = shlex.split(command)
    words[0] = SNAKEMAKE
    if "--report" in words:
        proc = _run(words, work)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 or "marked for report but does not exist" in out, f"{where}\n{out[-4000:]}"
        return
    if not {"--unlock", "--lint"} & set(words):
        words += ["--dry-run", "--quiet", "rules"]
    proc = _run(words, work)
    assert proc.returncode == 0, f"{where}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------- python -m / F.py
class _Parsed(Exception):
    pass


def _parse_only(words: list[str]) -> tuple[str, object, str]:
    """Run ``python ...`` in this process up to its argparse parse: ("parsed", namespace | exit code, output)."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    target, args = (words[2], words[3:]) if words[1] == "-m" else (words[1], words[2:])
    out = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), \
            mock.patch.object(sys, "argv", [target, *args]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        try:
            if words[1] == "-m":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(REPO / target), run_name="__main__")
        except _Parsed as parsed:
            return "parsed", parsed.args[0], out.getvalue()
        except SystemExit as exc:
            return "exit", exc.code, out.getvalue()
    return "ran", None, out.getvalue()


@pytest.mark.parametrize("where, command", _ids("python"))
def test_python_command_parses(where, command):
    words = shlex.split(command)
    if words[1] != "-m":
        assert (REPO / words[1]).is_file(), f"{where}: no file {words[1]}"
    elif len(words) == 3:  # the module's name
        assert importlib.util.find_spec(words[2]) is not None, f"{where}: no module {words[2]}"
        return
    how, value, out = _parse_only(words)
    if "--help" in words or "-h" in words:
        assert how == "exit" and value in (0, None) and "usage:" in out, f"{where}: {how} {value}\n{out[-3000:]}"
    else:
        assert how == "parsed", f"{where}: its arguments were not accepted ({how} {value}):\n{out[-3000:]}"


# ------------------------------------------------------------------------------------------------- make / bash
@pytest.mark.parametrize("where, command", _ids("make"))
def test_make_target_exists(work, where, command):
    words = shlex.split(command)
    proc = _run(["make", "-n", *words[1:]], work, timeout=120)
    assert proc.returncode == 0, f"{where}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("where, command", _ids("bash"))
def test_bash_script_exists(where, command):
    words = shlex.split(command)
    script = REPO / words[1]
    assert script.is_file(), f"{where}: no file {words[1]}"
    proc = _run(["bash", "-n", str(script)], REPO, timeout=60)
    assert proc.returncode == 0, f"{where}\n{proc.stderr}"


# --------------------------------------------------------------------------------------------------------- dvc
@pytest.fixture(scope="module")
def dvc_stages(work) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(work)) as repo:
        return {st.name for st in repo.index.stages}


@pytest.mark.parametrize("where, command", _ids("dvc"))
def test_dvc_command_parses(work, dvc_stages, where, command):
    from dvc.cli import DvcParserError, parse_args

    words = shlex.split(command)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            args = parse_args(words[1:])
    except (DvcParserError, SystemExit) as exc:
        raise AssertionError(f"{where}: DVC does not accept it ({exc}):\n{out.getvalue()[-2000:]}") from None
    if words[1] == "repro":
        for target in args.targets:
            assert target in dvc_stages or (work / target).exists(), \
                f"{where}: {target!r} is not a stage of dvc.yaml (`dvc stage list`)"
    for setting in getattr(args, "set_param", None) or []:
        file, _, assignment = setting.rpartition(":")
        key = assignment.split("=", 1)[0]
        node = yaml.safe_load((work / file).read_text())
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{where}: {file} has no key {key!r}"
            node = node[part]


# --------------------------------------------------------------------------------- failed jobs on the console
PROFILES = {"default": REPO / "profiles" / "default", "slurm": REPO / "workflow" / "profiles" / "slurm"}


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_show_failed_logs(profile):
    """Snakemake 9 reads profile.yaml or config.yaml (whichever it lists first: neither has a version infix),
    Snakemake 8 config.yaml: the two must be the same profile, and both show a failed job's log."""
    a = yaml.safe_load((PROFILES[profile] / "profile.yaml").read_text())
    b = yaml.safe_load((PROFILES[profile] / "config.yaml").read_text())
    assert a == b, f"{PROFILES[profile]}: profile.yaml and config.yaml differ"
    assert a.get("show-failed-logs") is True


STATS_TARGET = "data/interim/cifar100_demo/dirmap_stats.json"
STATS_LOG = "logs/dirmap_stats/cifar100_demo.log"


@pytest.fixture(scope="module")
def mismatch(tmp_path_factory) -> Path:
    """A copy whose cifar100_demo expects one image too many, with the statistics' input already built."""
    work = copy_repo(tmp_path_factory.mktemp("mismatch") / "repo")
    cfg = work / "params" / "datasets.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["cifar100_demo"]["expected_stats"]["n_images"] += 1
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _run([SNAKEMAKE, "data/interim/cifar100_demo/dirmap_raw.csv", "--cores", "1"], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


def _failed_stats_run(work: Path, *extra: str) -> tuple[str, str]:
    """(console output, the log's `error: ...` line) of the failing statistics job."""
    (work / STATS_LOG).unlink(missing_ok=True)
    proc = _run([SNAKEMAKE, STATS_TARGET, "--cores", "1", *extra], work)
    assert proc.returncode != 0, "the statistics job should fail on the wrong expected value"
    errors = [ln for ln in (work / STATS_LOG).read_text().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "n_images" in errors[0], errors
    return proc.stdout + proc.stderr, errors[0]


@pytest.mark.timeout(600)
def test_failed_job_error_on_console_as_the_readme_runs_snakemake(mismatch):
    """A plain `snakemake` in the repository root (the README's commands, `make demo`) loads profiles/default by
    itself (Snakemake 9 looks for it next to the Snakefile), so a failed job's one-line error is on the console,
    not only in its log."""
    console, error = _failed_stats_run(mismatch)
    assert error in console, console[-3000:]
