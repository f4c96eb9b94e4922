# One training job per (dataset, fidelity, scenario, agent, run), seeded from the run number (spec 5; README).
# A job reads the decoded-image cache (hp image_cache) and, for AugMem with a frozen SqueezeNet front and weights other
# than 'none', the front-feature cache (hp feature_cache): rules in cache.smk.


rule train:
    """Train one agent on one run's task stream; writes metrics.json and viz.npz (only its meta_json when the job's
    `visualize` is off). A killed job's per-task checkpoint.pt (resume state) is deliberately no output."""
    input:
        unpack(lambda w: {**train_inputs(w),
                          **cache_input_files(cache_prefixes(f"data/interim/{w.dataset}/cache", *job_hparams(w))),
                          **selected_input(w)}),  # hparams: selected -> the grid search's selected.yaml
    output:
        metrics="results/{dataset}/{fidelity}/{scenario}/{agent}/run{run}/metrics.json",
        viz="results/{dataset}/{fidelity}/{scenario}/{agent}/run{run}/viz.npz",
    params:
        config=job_config,
        image_root=lambda w: image_root(w.dataset),
        out="results/{dataset}/{fidelity}/{scenario}/{agent}/run{run}",
        device=config["train"]["device"],
        seed_base=config["train"]["seed_base"],
        caches=lambda w: cache_stage_args(cache_prefixes(f"data/interim/{w.dataset}/cache", *job_hparams(w))),
        weights=imagenet_weights_args,
        previous=previous_runs_args,
        selected=selected_args,  # `--selected FILE` under hparams: selected (gridsearch.smk), else nothing
    threads: config["train"]["threads"]
    resources:
        # loader workers: execution-only, so a resource (not a param: changing it reruns nothing)
        n_workers=job_n_workers,
        gpu=1 if USE_GPU else 0,
        mem_mb=16000 if USE_GPU else 4000,
        runtime=240 if USE_GPU else 60,
    log:
        "logs/train/{dataset}/{fidelity}/{scenario}/{agent}/run{run}.log",
    benchmark:
        "results/{dataset}/{fidelity}/{scenario}/{agent}/run{run}/benchmark.tsv"
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.train --dataset {wildcards.dataset:q} --scenario {wildcards.scenario:q}"
        " --agent {wildcards.agent:q} --run {wildcards.run:q} --fidelity {wildcards.fidelity:q}"
        " --filelists {input.filelists:q} --image-root {params.image_root:q} --out {params.out:q}"
        " --hparams {params.config:q} --device {params.device:q} --threads {threads}"
        " --n-workers {resources.n_workers} --seed-base {params.seed_base:q} {params.caches:q} {params.weights:q}"
        " {params.previous:q} {params.selected:q}"
        " > {log:q} 2>&1"


rule fetch_weights:
    """A backbone's ImageNet weights as a local file, so jobs run offline: torchvision's (downloaded once; needs a
    network) or, for EfficientNet-Lite0, the file of the installed package (no network)."""
    output:
        "data/weights/{arch}_imagenet.pth",
    wildcard_constraints:
        arch=_alternatives(BACKBONE_ARCHS),
    log:
        "logs/fetch_weights/{arch}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.fetch_weights --arch {wildcards.arch:q} --out {output:q} > {log:q} 2>&1"
