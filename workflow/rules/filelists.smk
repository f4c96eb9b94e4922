# Task filelists (spec 3): one job per (dataset, fidelity, scenario, run), stream and offline, original layout.


def _filelist_args(w):
    t = DATASETS[w.dataset]["tasks"]
    args = ["--task-size-iid", t["task_size_iid"], "--n-class", t["n_class"], "--n-instance", t["n_instance"],
            "--test-sess", *t["test_sess"]]
    if "sample_rate" in t:
        args += ["--sample-rate", t["sample_rate"]]
    if "frames_per_session" in t:
        args += ["--frames-per-session", t["frames_per_session"]]
    return [str(a) for a in args]


rule filelists:
    input:
        dirmap=lambda w: final_dirmap(w.dataset),
        stats="data/interim/{dataset}/dirmap_stats.json",  # the checked statistics gate the task set-up
    output:
        directory("data/interim/{dataset}/filelists/{fidelity}/{dataset}_task_filelists/{scenario}/run{run}"),
    params:
        kind=lambda w: kind(w.dataset),
        args=_filelist_args,
        out="data/interim/{dataset}/filelists/{fidelity}",
    log:
        "logs/filelists/{dataset}/{fidelity}/{scenario}/run{run}.log",
    shell:
        "python -m stages.filelists --dataset {wildcards.dataset} --kind {params.kind} --dirmap {input.dirmap}"
        " --scenario {wildcards.scenario} --n-runs 1 --runs {wildcards.run} --mode both"
        " --fidelity {wildcards.fidelity} --out {params.out} {params.args:q} > {log} 2>&1"
