# Hyperparameter grid search rules (README "Grid search"): one training job per grid point and run, one summary per
# cell. The grids, the jobs' hyperparameters and inputs are in gridsearch_common.smk.

if GRIDSEARCH_CELLS:

    rule gridsearch_train:
        """One grid point's run: the same stages.train as every job, with the point's resolved hyperparameters."""
        input:
            unpack(_grid_train_inputs),
        output:
            metrics=f"{GS_RUN}/metrics.json",
            viz=f"{GS_RUN}/viz.npz",
        wildcard_constraints:
            point=r"[A-Za-z0-9_.+=,-]+",
        params:
            config=_grid_job_config,
            image_root=lambda w: image_root(w.dataset),
            out=GS_RUN,
            device=config["train"]["device"],
            seed_base=config["train"]["seed_base"],
            caches=lambda w: cache_stage_args(_grid_prefixes(w)),
            weights=_grid_weights_args,
            previous=_grid_previous_args,
        threads: config["train"]["threads"]
        resources:
            n_workers=lambda w: int(_grid_job(w)[1]["n_workers"]),
            gpu=1 if USE_GPU else 0,
            mem_mb=16000 if USE_GPU else 4000,
            runtime=240 if USE_GPU else 60,
        log:
            "logs/gridsearch/{dataset}/{fidelity}/{scenario}/{agent}/{point}/run{run}.log",
        benchmark:
            f"{GS_RUN}/benchmark.tsv"
        conda:
            "../envs/augmem.yaml"
        shell:
            "python -m stages.train --dataset {wildcards.dataset:q} --scenario {wildcards.scenario:q}"
            " --agent {wildcards.agent:q} --run {wildcards.run:q} --fidelity {wildcards.fidelity:q}"
            " --filelists {input.filelists:q} --image-root {params.image_root:q} --out {params.out:q}"
            " --hparams {params.config:q} --device {params.device:q} --threads {threads}"
            " --n-workers {resources.n_workers} --seed-base {params.seed_base:q} {params.caches:q} {params.weights:q}"
            " {params.previous:q} > {log:q} 2>&1"

    rule gridsearch_summary:
        """Rank the points of one cell (score mean and SEM over runs, per-task curve), draw the top ones and write
        the winner (selected.yaml)."""
        input:
            metrics=lambda w: grid_metrics(w.dataset, w.fidelity, w.scenario, w.agent),
        output:
            summary=f"{GS_DIR}/summary.csv",
            plot=f"{GS_DIR}/summary_plot.png",
            selected=f"{GS_DIR}/selected.yaml",
        params:
            points=lambda w: GRIDSEARCH.grids[w.agent].ids,
            searched=lambda w: GRIDSEARCH.grids[w.agent].keys,
            selection=lambda w: GS_SELECTION[w.fidelity],
            top=GRIDSEARCH.plot_top,
        log:
            "logs/gridsearch/{dataset}/{fidelity}/{scenario}/{agent}/summary.log",
        conda:
            "../envs/augmem.yaml"
        shell:
            "python -m stages.gridsearch_summary --metrics {input.metrics:q} --points {params.points:q}"
            " --keys {params.searched:q} --selection {params.selection:q} --dataset {wildcards.dataset:q}"
            " --fidelity {wildcards.fidelity:q} --scenario {wildcards.scenario:q} --agent {wildcards.agent:q}"
            " --top {params.top:q} --out-summary {output.summary:q} --out-plot {output.plot:q}"
            " --out-selected {output.selected:q} > {log:q} 2>&1"
