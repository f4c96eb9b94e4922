# Caches for fast stream learning (README, "Performance"): every usable image of a dataset decoded and resized once
# (per image size), and the frozen SqueezeNet front's features of those images computed once (per weights and image
# size). Training jobs read them instead of decoding images / running the frozen front at every epoch; which jobs
# read which cache is decided by augmem.data.cache_plan.cache_prefixes (hp image_cache / feature_cache).
from augmem.data.cache_plan import cache_input_files, cache_prefixes, cache_stage_args, weights_by_key
from augmem.io import InputError

# cache key of the weights (the file stem, sanitised; 'imagenet') -> what the agents load
try:
    CACHE_WEIGHTS = weights_by_key(
        {job.hp["weights"] for job in JOB_HPARAMS.values()},
        weights_file("squeezenet"),
    )
except InputError as _exc:
    raise WorkflowError(f"params: {_exc}")


rule image_cache:
    """Decode and resize every image the task set-up can use into one memory-mapped uint8 array (+ JSON index)."""
    input:
        dirmap=lambda w: final_dirmap(w.dataset),
        images=lambda w: image_root_input(w.dataset),
        stats="data/interim/{dataset}/dirmap_stats.json",  # the checked statistics (and n_class) gate the cache
    output:
        data="data/interim/{dataset}/cache/images_{size}.u8",
        meta="data/interim/{dataset}/cache/images_{size}.json",
    wildcard_constraints:
        size=r"\d+",
    params:
        layout=lambda w: layout(w.dataset).name,
        image_root=lambda w: image_root(w.dataset),
        sample_rate=lambda w: (DATASETS[w.dataset].get("tasks") or {}).get("sample_rate", 20),
        prefix=lambda w, output: output.meta.removesuffix(".json"),
    threads: 4
    resources:
        mem_mb=2000,
        runtime=120,
    log:
        "logs/image_cache/{dataset}_{size}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.image_cache --layout {params.layout:q} --dirmap {input.dirmap:q}"
        " --image-root {params.image_root:q} --size {wildcards.size:q} --sample-rate {params.sample_rate:q}"
        " --threads {threads} --out-prefix {params.prefix:q} > {log:q} 2>&1"


rule feature_cache:
    """Compute the frozen front E(x) of every cached image once (float16 memmap, + JSON with the weights digest)."""
    input:
        data="data/interim/{dataset}/cache/images_{size}.u8",
        meta="data/interim/{dataset}/cache/images_{size}.json",
        weights=lambda w: CACHE_WEIGHTS[w.weights],
    output:
        data="data/interim/{dataset}/cache/features_{backbone}_{weights}_{size}.f16",
        meta="data/interim/{dataset}/cache/features_{backbone}_{weights}_{size}.json",
    wildcard_constraints:
        backbone="squeezenet",
        weights=_alternatives(CACHE_WEIGHTS),
        size=r"\d+",
    params:
        image_cache=lambda w, input: input.meta.removesuffix(".json"),
        prefix=lambda w, output: output.meta.removesuffix(".json"),
        device=config["train"]["device"],
    threads: config["train"]["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        mem_mb=8000 if USE_GPU else 4000,
        runtime=120,
    log:
        "logs/feature_cache/{dataset}_{backbone}_{weights}_{size}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.feature_cache --image-cache {params.image_cache:q} --backbone {wildcards.backbone:q}"
        " --weights {input.weights:q} --out-prefix {params.prefix:q} --device {params.device:q} --threads {threads}"
        " > {log:q} 2>&1"
