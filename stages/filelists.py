"""Stage: task filelists from a dirmap (spec section 3), in the original layout.

Writes ``OUT/<dataset>_task_filelists/<scenario>/run<r>/<stream|offline>/`` with ``train_task_XX_filelist.txt``,
``test_filelist.txt`` and ``train_all.txt``; each run folder is written atomically (with the output marker
``.augmem-output.json``) and only replaces an earlier output of this stage.

Example (the original Toybox setup):
    python -m stages.filelists --dataset toybox --dirmap toybox_dirmap.csv --scenario class_iid --n-runs 10 \\
        --fidelity reference --out data/interim/toybox --task-size-iid 6090 --n-instance 406 --test-sess 3 6 9
"""
from __future__ import annotations

import argparse
import sys

from augmem.data import filelists as fl
from augmem.data import layouts
from augmem.data.fidelity import FIDELITIES
from augmem.io import InputError, check_outputs


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults in --help, except None/False (required options and flags)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stages.filelists",
        description="Generate task filelists (train_task_XX_filelist.txt, test_filelist.txt, train_all.txt) "
        "from a dirmap CSV, per run, for one scenario.",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("--dataset", required=True, help="dataset name used in the output folder <dataset>_task_filelists")
    p.add_argument("--dirmap", required=True, help="dirmap CSV (read without index_col)")
    p.add_argument("--scenario", required=True, choices=fl.SCENARIOS)
    p.add_argument("--n-runs", type=_positive, default=10, metavar="N", help="runs 0..N-1")
    p.add_argument("--runs", type=_non_negative, nargs="+", metavar="R",
                   help="generate only these run numbers (instead of 0..n-runs-1)")
    p.add_argument("--offline", action="store_true", help="offline (cumulative) tasks; same as --mode offline")
    p.add_argument("--mode", choices=("stream", "offline", "both"), help="default: stream (offline with --offline)")
    p.add_argument("--fidelity", required=True, choices=FIDELITIES)
    p.add_argument("--out", required=True, help="output root folder")
    layouts.add_layout_option(p, required=False, help="dataset layout (default: --dataset, when it names one)")
    p.add_argument("--task-size-iid", type=_positive, default=1200, metavar="N", help="rows per iid task")
    p.add_argument("--n-class", type=_positive, default=2, metavar="N",
                   help="classes per task (class_iid, class_instance); must divide the classes of the training "
                   "split unless --uneven-last-task")
    p.add_argument("--uneven-last-task", action="store_true",
                   help="allow --n-class not dividing the classes (the last task holds the remainder)")
    p.add_argument("--dataset-classes", type=_positive, metavar="N",
                   help="the dataset's number of classes (n_class of its entry, the network's outputs): the dirmap "
                   "must hold exactly N classes (checked before anything is written)")
    p.add_argument("--n-instance", type=_positive, default=80, metavar="N", help="sessions per task (instance)")
    p.add_argument("--sample-rate", type=_positive, default=20, metavar="N",
                   help="CORe50 frame step (frames 10, 10+N, ... < 300)")
    p.add_argument("--test-sess", type=int, nargs="+", metavar="S",
                   help="test sessions; default: the layout's (" + ", ".join(
                       f"{lay.name} {list(lay.default_test_sess)}" for lay in layouts.LAYOUTS.values()
                       if lay.default_test_sess) + "), required for the others")
    p.add_argument("--frames-per-session", type=_positive, metavar="N",
                   help="instance scenario: frames per session; default: the layout's (CORe50 300/sample-rate, "
                   "Toybox/iLab 15)")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        layout = layouts.get(args.layout or args.dataset)
    except InputError:
        parser.error(f"--layout is needed: dataset {args.dataset!r} is not a layout name ({layouts.names()})")
    if args.scenario not in layout.scenarios:
        parser.error(f"scenario {args.scenario} is not possible with layout {layout.name} "
                     f"(possible: {list(layout.scenarios)})")
    test_sess = args.test_sess
    if test_sess is None:
        if layout.default_test_sess is None:
            parser.error(f"--test-sess is needed for layout {layout.name}")
        test_sess = list(layout.default_test_sess)
    if args.offline and args.mode not in (None, "offline"):
        parser.error(f"--offline contradicts --mode {args.mode}")
    mode = "offline" if args.offline else (args.mode or "stream")
    modes = {"stream": [False], "offline": [True], "both": [False, True]}[mode]
    runs = args.runs if args.runs is not None else list(range(args.n_runs))
    try:
        folders = [fl.run_dir(args.out, args.dataset, args.scenario, r, offline) for r in runs for offline in modes]
        check_outputs(folders, inputs=[args.dirmap], stage=fl.STAGE, kind="dir")
        fps = None
        if args.scenario == "instance":
            fps = fl.default_frames_per_session(layout, args.sample_rate, args.frames_per_session)
        dirmap = fl.read_dirmap(args.dirmap)
        train, test = fl.train_test_split(dirmap, layout, test_sess, args.sample_rate, source=args.dirmap)
        fl.check_task_arguments(dirmap, train, args.scenario, args.n_class, args.dataset_classes,
                                args.uneven_last_task, source=args.dirmap)
        fl.write_filelists(
            args.out, args.dataset, train, test, args.scenario, runs, modes, args.fidelity,
            task_size_iid=args.task_size_iid, n_class=args.n_class, n_instance=args.n_instance,
            frames_per_session=fps, inputs=[args.dirmap],
        )
    except InputError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
