# Task filelists (spec 3): one job per (dataset, fidelity, scenario, run), stream and offline, original layout. Task
# arguments that do not fit the data (the dataset's n_class vs the classes found, classes per task not dividing them)
# stop this step with the dirmap and the numbers, before any training or image cache.


rule filelists:
    input:
        dirmap=lambda w: final_dirmap(w.dataset),
        stats="data/interim/{dataset}/dirmap_stats.json",  # the checked statistics gate the task set-up
    output:
        directory("data/interim/{dataset}/filelists/{fidelity}/{dataset}_task_filelists/{scenario}/run{run}"),
    params:
        layout=lambda w: layout(w.dataset).name,
        args=_filelist_args,
        out="data/interim/{dataset}/filelists/{fidelity}",
    log:
        "logs/filelists/{dataset}/{fidelity}/{scenario}/run{run}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.filelists --dataset {wildcards.dataset:q} --layout {params.layout:q} --dirmap {input.dirmap:q}"
        " --scenario {wildcards.scenario:q} --n-runs 1 --runs {wildcards.run:q} --mode both"
        " --fidelity {wildcards.fidelity:q} --out {params.out:q} {params.args:q} > {log:q} 2>&1"
