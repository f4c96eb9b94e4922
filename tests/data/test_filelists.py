"""Task filelists: byte-for-byte reproduction of the reference filelists, spec section 13 numbers, corrected mode,
the stage CLI and bad inputs."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augmem.data import filelists as fl
from augmem.data.fidelity import DataSwitches, data_switches
from augmem.io import MARKER, InputError

REPO = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference")
DIRMAPS = REF / "dirmaps"
REF_FILELISTS = REF / "filelists"

# The original setup scripts' arguments (spec 3.5); CORe50 uses the defaults.
SETUP = {
    "core50": dict(test_sess=[3, 7, 10], params=dict(task_size_iid=1200, n_class=2, n_instance=80)),
    "toybox": dict(test_sess=[3, 6, 9], params=dict(task_size_iid=6090, n_class=2, n_instance=406)),
    "cifar100": dict(test_sess=[1], params=dict(task_size_iid=2500, n_class=5, n_instance=5)),
}
# CORe50 class ids (1..10) -> names.
CORE50_NAMES = {1: "plug", 2: "phone", 3: "scissors", 4: "lightbulb", 5: "can", 6: "glasses", 7: "ball",
                8: "marker", 9: "cup", 10: "remote"}

needs_reference = pytest.mark.skipif(not REF.is_dir(), reason="reference data not available")


def _numpy_ties_like_reference() -> bool:
    """The published Toybox class_instance file was made by a numpy whose quicksort argsort (x86-simd-sort, AVX2 or
    AVX-512) breaks im_num ties this way; numpy's portable introsort breaks them differently (spec 12.3)."""
    a = np.r_[np.arange(1, 16), np.arange(1, 16)].astype(np.int64)
    return np.argsort(a, kind="quicksort")[:8].tolist() == [0, 15, 1, 16, 17, 2, 3, 18]


@pytest.fixture(scope="module")
def splits():
    """(train, test) per reference dataset, loaded once."""
    if not REF.is_dir():
        pytest.skip("reference data not available")
    out = {}
    for ds, cfg in SETUP.items():
        dirmap = fl.read_dirmap(DIRMAPS / f"{ds}_dirmap.csv")
        out[ds] = fl.train_test_split(dirmap, ds, cfg["test_sess"], 20)
    return out


def _make(splits, ds, scenario, run, offline=False, fidelity="reference"):
    train, test = splits[ds]
    fps = fl.default_frames_per_session(ds, 20) if scenario == "instance" else None
    return fl.make_run(train, test, scenario, run, offline, fidelity, frames_per_session=fps, **SETUP[ds]["params"])


# --------------------------------------------------------------------------------------------------------------------
# Byte-for-byte reproduction of every reference file

REF_FILES = sorted(p.relative_to(REF_FILELISTS) for p in REF_FILELISTS.rglob("*.txt")) if REF.is_dir() else []


@pytest.fixture(scope="module")
def regenerated(splits, tmp_path_factory):
    """Every reference run folder regenerated (reference fidelity) under a temporary root."""
    root = tmp_path_factory.mktemp("regenerated")
    for folder in sorted({p.parent for p in REF_FILES}):
        ds = folder.parts[0].removesuffix("_task_filelists")
        scenario, run, mode = folder.parts[1], int(folder.parts[2].removeprefix("run")), folder.parts[3]
        result = _make(splits, ds, scenario, run, offline=mode == "offline")
        fl.write_run(fl.run_dir(root, ds, scenario, run, mode == "offline"), result)
    return root


@needs_reference
@pytest.mark.parametrize("rel", REF_FILES, ids=[str(p) for p in REF_FILES])
def test_reference_file_reproduced_byte_for_byte(regenerated, rel):
    if rel.parts[:2] == ("toybox_task_filelists", "class_instance") and not _numpy_ties_like_reference():
        pytest.skip("this numpy build breaks im_num ties differently from the one that made the reference (spec 12.3)")
    assert (regenerated / rel).read_bytes() == (REF_FILELISTS / rel).read_bytes()


@needs_reference
def test_regenerated_folders_hold_no_extra_files(regenerated):
    made = sorted(p.relative_to(regenerated) for p in regenerated.rglob("*") if p.is_file() and p.name != MARKER)
    assert made == REF_FILES
    assert len(list(regenerated.rglob(MARKER))) == len({p.parent for p in REF_FILES})  # one per run folder
    assert len(REF_FILES) == 73


# --------------------------------------------------------------------------------------------------------------------
# Section 13 numbers: CORe50


def test_core50_split_sizes(splits):
    train, test = splits["core50"]
    assert (len(train), len(test)) == (6000, 2250)
    assert sorted(train["im_num"].unique()) == list(range(10, 300, 20))
    assert set(test["session"]) == {3, 7, 10}


def test_core50_task_sizes(splits):
    sizes = lambda r: [len(t) for t in r.tasks]  # noqa: E731
    assert sizes(_make(splits, "core50", "iid", 0)) == [1201] * 4 + [1200]
    assert sizes(_make(splits, "core50", "iid", 0, offline=True)) == [1201, 2401, 3601, 4801, 6000]
    assert sizes(_make(splits, "core50", "class_iid", 0)) == [1200] * 5
    assert sizes(_make(splits, "core50", "class_iid", 0, offline=True)) == [1200, 2400, 3600, 4800, 6000]
    assert sizes(_make(splits, "core50", "class_instance", 0)) == [1200] * 5
    inst = _make(splits, "core50", "instance", 0)
    assert sizes(inst) == [1200] * 5
    for task in inst.tasks:
        assert len(task.groupby(["object", "session"])) == 80


def test_core50_iid_neighbouring_tasks_share_boundary_row(splits):
    tasks = _make(splits, "core50", "iid", 0).tasks
    for a, b in zip(tasks, tasks[1:]):
        assert a["Unnamed: 0"].iloc[-1] == b["Unnamed: 0"].iloc[0]
    assert tasks[0]["task"].dtype == float


def test_iid_offline_train_all_keeps_shuffled_index(splits, tmp_path):
    result = _make(splits, "core50", "iid", 0, offline=True)
    assert not result.train_all.index.is_unique  # cumulative sets repeat shuffled positions (spec 3.4)
    out = fl.write_run(tmp_path / "offline", result)
    lines = (out / "train_all.txt").read_text().splitlines()
    assert lines[0] == ",Unnamed: 0,class,object,session,im_num,im_path,task,label"
    assert lines[1].split(",")[-2] == "0.0" and lines[-1].split(",")[-2] == "4.0"
    assert len(lines) == 1 + 1201 + 2401 + 3601 + 4801 + 6000


def test_core50_run0_class_order_and_labels(splits):
    result = _make(splits, "core50", "class_iid", 0)
    order = [3, 9, 5, 10, 2, 7, 8, 4, 1, 6]  # the NumPy shuffle of classes 1..10 with seed 0
    for t, task in enumerate(result.tasks):
        assert set(task["class"]) == set(order[2 * t : 2 * t + 2])
    labels = result.train_all.drop_duplicates("label").sort_values("label")
    assert labels["class"].tolist() == [3, 9, 5, 10, 2, 7, 4, 8, 1, 6]  # the swap within task 3
    # test rows get labels through the same map
    mapping = dict(zip(result.train_all["class"], result.train_all["label"]))
    assert (result.test["label"] == result.test["class"].map(mapping)).all()


def test_core50_run1_task0_label0_is_class10(splits):
    result = _make(splits, "core50", "class_iid", 1)
    assert set(result.tasks[0]["class"]) == {3, 10}
    assert result.train_all.loc[result.train_all["label"] == 0, "class"].iloc[0] == 10


def test_core50_run0_class_instance_label_order(splits):
    result = _make(splits, "core50", "class_instance", 0)
    first = pd.unique(result.train_all["class"])
    assert [CORE50_NAMES[c] for c in first] == [
        "scissors", "cup", "remote", "can", "phone", "ball", "marker", "lightbulb", "glasses", "plug"]


def test_offline_labels_can_differ_from_stream(splits):
    stream = _make(splits, "core50", "class_iid", 0)
    offline = _make(splits, "core50", "class_iid", 0, offline=True)
    assert [set(t["class"]) for t in offline.tasks] == [
        set().union(*(set(s["class"]) for s in stream.tasks[: t + 1])) for t in range(5)]
    assert (stream.test["label"] != offline.test["label"]).any()  # spec 3.3


# --------------------------------------------------------------------------------------------------------------------
# Section 13 numbers: Toybox, CIFAR-100


def test_toybox_numbers(splits):
    train, test = splits["toybox"]
    assert (len(train), len(test)) == (36540, 15660)
    cls = _make(splits, "toybox", "class_iid", 0)
    assert [len(t) for t in cls.tasks] == [6090] * 6
    assert pd.unique(cls.train_all["class"]).tolist() == [7, 12, 5, 11, 3, 9, 2, 8, 4, 10, 1, 6]
    assert [len(t) for t in _make(splits, "toybox", "iid", 0).tasks] == [6091] * 5 + [6090]
    assert [len(t) for t in _make(splits, "toybox", "class_instance", 0).tasks] == [6090] * 6


def test_toybox_instance_quirk_all_data_in_task0(splits, tmp_path):
    result = _make(splits, "toybox", "instance", 0)
    assert [len(t) for t in result.tasks] == [36540, 0, 0, 0, 0, 0]
    out = fl.write_run(tmp_path / "run0", result)
    assert (out / "train_task_05_filelist.txt").read_bytes() == b""
    assert len((out / "train_task_00_filelist.txt").read_text().splitlines()) == 36540


def test_toybox_class_instance_merges_classes(splits):
    head = _make(splits, "toybox", "class_instance", 0).tasks[0].head(30)
    assert set(head["class"]) == {7, 12}
    assert set(head["object"]) == {29} and set(head["session"]) == {4}
    assert (head["class"].iloc[0], head["class"].iloc[1]) == (7, 12)
    assert head["im_num"].is_monotonic_increasing


def test_cifar100_numbers(splits):
    train, test = splits["cifar100"]
    assert (len(train), len(test)) == (50000, 10000)
    assert (test.groupby("class").size() == 100).all()
    result = _make(splits, "cifar100", "class_iid", 0)
    assert [len(t) for t in result.tasks] == [2500] * 20
    labels = pd.unique(result.train_all["class"])[:10].tolist()
    # Spec 13 lists labels 0..9 as baby, telephone, crab, skunk, otter, whale, can, shark, turtle, orchid; the
    # published filelist (reproduced byte for byte above) has the same first five and the same set for 5..9, in
    # first-appearance order can, whale, orchid, turtle, shark. The published file is taken as the truth.
    assert labels[:5] == ["baby", "telephone", "crab", "skunk", "otter"]
    assert set(labels[5:]) == {"whale", "can", "shark", "turtle", "orchid"}
    assert labels[5:] == ["can", "whale", "orchid", "turtle", "shark"]


# --------------------------------------------------------------------------------------------------------------------
# Corrected mode and switches


def test_data_switches():
    assert data_switches("reference") == DataSwitches(True, True, True)
    assert data_switches("corrected") == DataSwitches(False, False, False)
    with pytest.raises(ValueError):
        data_switches("faithful")
    with pytest.raises(dataclasses.FrozenInstanceError):
        data_switches("reference").inclusive_iid_slices = False


def test_corrected_iid_tasks_disjoint_and_cover_train(splits):
    train, _ = splits["core50"]
    result = _make(splits, "core50", "iid", 0, fidelity="corrected")
    assert [len(t) for t in result.tasks] == [1200] * 5
    ids = pd.concat([t["Unnamed: 0"] for t in result.tasks])
    assert ids.is_unique and set(ids) == set(train["Unnamed: 0"])
    offline = _make(splits, "core50", "iid", 0, offline=True, fidelity="corrected")
    assert [len(t) for t in offline.tasks] == [1200, 2400, 3600, 4800, 6000]
    assert all(t["Unnamed: 0"].is_unique for t in offline.tasks)


def test_corrected_class_iid_equals_reference(splits):
    ref = _make(splits, "core50", "class_iid", 3, offline=True)
    cor = _make(splits, "core50", "class_iid", 3, offline=True, fidelity="corrected")
    pd.testing.assert_frame_equal(ref.train_all, cor.train_all)


def _blocks(task, size=15):
    return [task.iloc[i : i + size] for i in range(0, len(task), size)]


def test_corrected_toybox_instance_spreads_over_six_tasks(splits):
    result = _make(splits, "toybox", "instance", 0, fidelity="corrected")
    assert [len(t) for t in result.tasks] == [6090] * 6
    assert result.train_all["Unnamed: 0"].is_unique
    for block in _blocks(result.tasks[2]):  # instances are one class's object session, frames in order
        assert block[["class", "object", "session"]].drop_duplicates().shape[0] == 1
        assert block["im_num"].tolist() == list(range(1, 16))


def test_corrected_class_instance_one_class_per_instance(splits):
    result = _make(splits, "toybox", "class_instance", 0, fidelity="corrected")
    for t, task in enumerate(result.tasks):
        assert task["class"].nunique() == 2
        for block in _blocks(task)[:40]:
            assert block[["class", "object", "session"]].drop_duplicates().shape[0] == 1
            assert block["im_num"].is_monotonic_increasing
    # same classes per task as the reference mode (label order etc. kept)
    ref = _make(splits, "toybox", "class_instance", 0)
    assert [set(t["class"]) for t in ref.tasks] == [set(t["class"]) for t in result.tasks]


def test_instance_shuffle_equals_original_unique_rows_shuffle(splits):
    """Shuffling instance numbers draws what shuffling the np.unique rows did, offline prefixes included."""
    train, _ = splits["core50"]
    result = _make(splits, "core50", "instance", 4, offline=True)
    np.random.seed(4)
    instances = np.unique(train[["object", "session"]].values, axis=0)
    np.random.shuffle(instances)
    for t, task in enumerate(result.tasks):
        prefix = instances[: (t + 1) * 80]
        np.random.shuffle(prefix)
        got = task[["object", "session"]].drop_duplicates().to_numpy()
        np.testing.assert_array_equal(got, prefix)


def _naive_reference(train, test, scenario, run, offline, task_size_iid=1200, n_class=2, n_instance=80, fps=15):
    """A literal, slow transcription of spec 3.2-3.3 (global np.random, .loc slices, filter + sort_values per
    instance), to cross-check the vectorised implementation."""
    def instance_rows(frame, instances):
        return [frame[(frame["object"] == o) & (frame["session"] == s)].sort_values("im_num") for o, s in instances]

    tasks = []
    if scenario == "iid":
        shuffled = train.sample(frac=1, random_state=run).reset_index(drop=True)
        for t in range(int(np.ceil(len(train) / task_size_iid))):
            if offline:
                tasks.append(shuffled.loc[: (t + 1) * task_size_iid].sample(frac=1, random_state=run))
            else:
                tasks.append(shuffled.loc[t * task_size_iid : (t + 1) * task_size_iid])
    elif scenario == "instance":
        np.random.seed(run)
        instances = np.unique(train[["object", "session"]].values, axis=0)
        np.random.shuffle(instances)
        for t in range(int(np.ceil(len(train) / (n_instance * fps)))):
            if offline:
                chosen = instances[: (t + 1) * n_instance]
                np.random.shuffle(chosen)
            else:
                chosen = instances[t * n_instance : (t + 1) * n_instance]
            parts = instance_rows(train, chosen)
            tasks.append(pd.concat(parts) if parts else train.iloc[:0])
    else:
        np.random.seed(run)
        classes = np.asarray(train["class"].unique())
        np.random.shuffle(classes)
        for t in range(int(np.ceil(len(classes) / n_class))):
            if offline:
                chosen = classes[: (t + 1) * n_class]
                np.random.shuffle(chosen)
            else:
                chosen = classes[t * n_class : (t + 1) * n_class]
            rows = train[train["class"].isin(chosen)]
            if scenario == "class_iid":
                tasks.append(rows.sample(frac=1, random_state=run))
            else:
                instances = np.unique(rows[["object", "session"]].values, axis=0)
                np.random.shuffle(instances)
                tasks.append(pd.concat(instance_rows(rows, instances)))
    tasks = [task.assign(task=float(t) if scenario == "iid" else t) for t, task in enumerate(tasks)]
    train_all = pd.concat(tasks, ignore_index=scenario != "iid")
    mapping = {c: i for i, c in enumerate(train_all["class"].unique())}
    return train_all.assign(label=train_all["class"].map(mapping)), test.assign(label=test["class"].map(mapping))


@pytest.mark.parametrize("ds, scenario, run, offline", [
    ("core50", "iid", 2, True), ("core50", "class_iid", 5, True), ("core50", "instance", 1, True),
    ("core50", "class_instance", 7, True), ("toybox", "instance", 0, False), ("toybox", "class_instance", 1, False),
    ("toybox", "class_instance", 4, False), ("toybox", "iid", 6, False)])
def test_matches_literal_transcription(splits, ds, scenario, run, offline):
    train, test = splits[ds]
    p = SETUP[ds]["params"]
    want_all, want_test = _naive_reference(train, test, scenario, run, offline, p["task_size_iid"], p["n_class"],
                                           p["n_instance"], fps=15)
    got = _make(splits, ds, scenario, run, offline)
    pd.testing.assert_frame_equal(got.train_all, want_all)
    pd.testing.assert_frame_equal(got.test, want_test)


def test_deterministic(splits):
    a = _make(splits, "toybox", "class_instance", 2, offline=True)
    b = _make(splits, "toybox", "class_instance", 2, offline=True)
    pd.testing.assert_frame_equal(a.train_all, b.train_all)
    c = _make(splits, "toybox", "class_instance", 3, offline=True)
    assert not a.train_all["Unnamed: 0"].equals(c.train_all["Unnamed: 0"])


# --------------------------------------------------------------------------------------------------------------------
# Small synthetic dirmaps: iLab columns, frames-per-session override, bad inputs


def _tiny_dirmap(n_class=4, n_obj=2, n_sess=4, n_frames=5, extra_index=False) -> pd.DataFrame:
    rows = [
        dict(**{"class": c, "object": o, "session": s, "im_num": f, "im_path": f"c{c}/o{o}/s{s}_{f}.png"})
        for c in range(1, n_class + 1) for o in range(1, n_obj + 1)
        for s in range(1, n_sess + 1) for f in range(1, n_frames + 1)
    ]
    df = pd.DataFrame(rows)
    df.index = df.index * 3 + 7  # a non-contiguous dirmap index, as in Toybox
    if extra_index:
        df.insert(0, "Unnamed: 0", np.arange(len(df)) + 100)
    return df


def test_ilab_style_index_columns_travel_into_train_all(tmp_path):
    csv = tmp_path / "ilab2mlight_dirmap.csv"
    _tiny_dirmap(extra_index=True).to_csv(csv)
    dirmap = fl.read_dirmap(csv)
    # names as the original's pandas 1.1 gave them: the file's own index is "Unnamed: 0", the older one ".1"
    assert list(dirmap.columns[:2]) == ["Unnamed: 0", "Unnamed: 0.1"]
    assert dirmap["Unnamed: 0"].tolist()[:2] == [7, 10] and dirmap["Unnamed: 0.1"].tolist()[:2] == [100, 101]
    train, test = fl.train_test_split(dirmap, "ilab2mlight", [4], source=str(csv))
    result = fl.make_run(train, test, "class_iid", 0, False, "reference", n_class=2)
    out = fl.write_run(tmp_path / "run0" / "stream", result)
    header = (out / "train_all.txt").read_text().splitlines()[0]
    assert header == ",Unnamed: 0,Unnamed: 0.1,class,object,session,im_num,im_path,task,label"
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER, "test_filelist.txt", "train_all.txt", "train_task_00_filelist.txt", "train_task_01_filelist.txt"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_frames_per_session_override(fidelity):
    train, test = fl.train_test_split(_tiny_dirmap(), "toybox", [4])  # 4 classes x 2 objects x 3 sessions x 5
    fps = fl.default_frames_per_session("toybox", override=5)
    result = fl.make_run(train, test, "instance", 0, False, fidelity, n_instance=6, frames_per_session=fps)
    assert len(result.tasks) == 4  # ceil(120 / (6 * 5))
    sizes = [len(t) for t in result.tasks]
    if fidelity == "reference":  # (object, session) merges the 4 classes: 6 instances of 20 rows
        assert sizes == [120, 0, 0, 0]
    else:
        assert sizes == [30] * 4
    assert len(result.test) == 40 and result.test["label"].between(0, 3).all()


def test_default_frames_per_session():
    assert fl.default_frames_per_session("core50", 20) == 15
    assert fl.default_frames_per_session("toybox") == 15
    assert fl.default_frames_per_session("ilab") == 15
    assert fl.default_frames_per_session("ilab2mlight") == 15  # the old kind name
    with pytest.raises(InputError, match="class_folders"):
        fl.default_frames_per_session("class_folders")
    with pytest.raises(InputError, match="class_folders"):
        fl.default_frames_per_session("cifar100")


def test_core50_sample_rate_keeps_frames_from_10():
    dm = pd.DataFrame({"class": 1, "object": 1, "session": [1] * 300 + [3] * 300,
                       "im_num": list(range(300)) * 2, "im_path": [f"f{i}.png" for i in range(600)]})
    train, test = fl.train_test_split(dm, "core50", [3], sample_rate=20)
    assert train["im_num"].tolist() == list(range(10, 300, 20))
    assert train.index.tolist() == list(range(15))


def _write(tmp_path, df, name="dirmap.csv"):
    path = tmp_path / name
    df.to_csv(path)
    return path


def test_bad_dirmap_missing_column(tmp_path):
    path = _write(tmp_path, _tiny_dirmap().drop(columns="im_num"))
    with pytest.raises(InputError, match=r"dirmap\.csv.*im_num"):
        fl.read_dirmap(path)


@pytest.mark.parametrize("bad_path, why", [
    ("/abs/c1.png", "absolute"), ("c1/../../x.png", r"\.\."), ("c1/a b.png", "whitespace")])
def test_bad_dirmap_im_path(tmp_path, bad_path, why):
    df = _tiny_dirmap()
    df.iloc[5, df.columns.get_loc("im_path")] = bad_path
    path = _write(tmp_path, df)
    with pytest.raises(InputError, match=rf"dirmap\.csv: row 5 \(line 7\).*{why}"):
        fl.read_dirmap(path)


def test_bad_dirmap_non_integer_session(tmp_path):
    df = _tiny_dirmap().astype({"session": object})
    df.iloc[3, df.columns.get_loc("session")] = "x"
    with pytest.raises(InputError, match=r"row 3 .*'session'"):
        fl.read_dirmap(_write(tmp_path, df))


def test_bad_split_empty():
    dm = _tiny_dirmap()
    with pytest.raises(InputError, match="empty test split"):
        fl.train_test_split(dm, "toybox", [9], source="x.csv")
    with pytest.raises(InputError, match="empty training split"):
        fl.train_test_split(dm, "toybox", [1, 2, 3, 4], source="x.csv")
    with pytest.raises(InputError, match="unknown dataset layout 'mnist'"):
        fl.train_test_split(dm, "mnist", [4])


def test_test_class_absent_from_train():
    dm = _tiny_dirmap()
    dm = dm[~((dm["class"] == 2) & (dm["session"] != 4))]
    train, test = fl.train_test_split(dm, "toybox", [4])
    with pytest.raises(InputError, match=r"class\(es\) \[2\]"):
        fl.make_run(train, test, "class_iid", 0, False, "reference")


# --------------------------------------------------------------------------------------------------------------------
# Stage CLI


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stages.filelists", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@needs_reference
def test_cli_reproduces_reference(tmp_path):
    proc = _cli("--dataset", "core50", "--dirmap", DIRMAPS / "core50_dirmap.csv", "--scenario", "class_iid",
                "--runs", 0, "--mode", "both", "--fidelity", "reference", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    for mode in ("stream", "offline"):
        rel = Path("core50_task_filelists/class_iid/run0") / mode
        for ref in sorted((REF_FILELISTS / rel).iterdir()):
            assert (tmp_path / rel / ref.name).read_bytes() == ref.read_bytes(), ref
    assert sorted(p.name for p in (tmp_path / "core50_task_filelists/class_iid").iterdir()) == ["run0"]


@pytest.mark.parametrize("option", ["--layout", "--kind"])  # --kind: the deprecated alias
def test_cli_layout_and_n_runs(tmp_path, option):
    csv = _write(tmp_path, _tiny_dirmap(), "toybox_demo_dirmap.csv")
    proc = _cli("--dataset", "toybox_demo", option, "toybox", "--dirmap", csv, "--scenario", "instance",
                "--n-runs", 2, "--offline", "--fidelity", "corrected", "--out", tmp_path / "out",
                "--n-instance", 6, "--frames-per-session", 5, "--test-sess", 4)
    assert proc.returncode == 0, proc.stderr
    base = tmp_path / "out" / "toybox_demo_task_filelists" / "instance"
    assert sorted(p.name for p in base.iterdir()) == ["run0", "run1"]
    assert [p.name for p in (base / "run1").iterdir()] == ["offline"]
    assert len(list((base / "run1" / "offline").glob("train_task_*_filelist.txt"))) == 4


def test_cli_help_and_errors(tmp_path):
    assert _cli("--help").returncode == 0
    csv = _write(tmp_path, _tiny_dirmap(), "d.csv")
    common = ["--dataset", "toybox", "--dirmap", csv, "--scenario", "iid", "--fidelity", "reference",
              "--out", tmp_path / "out"]
    proc = _cli(*common, "--test-sess", 11)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error:") and "d.csv" in proc.stderr and "test split" in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = _cli(*common[:-2], "--out", tmp_path / "out", "--dirmap", tmp_path / "missing.csv", "--test-sess", 4)
    assert proc.returncode != 0 and "missing.csv" in proc.stderr
    proc = _cli(*common)  # Toybox's test sessions have no default (the old default was CORe50's 3 7 10)
    assert proc.returncode != 0 and "--test-sess is needed for layout toybox" in proc.stderr
    assert _cli(*common, "--offline", "--mode", "stream").returncode != 0
