# The embedded demo: deterministic synthetic raw datasets in exactly the real on-disk layouts.


rule demo_data:
    """Generate a demo dataset's raw files (videos, images) in the real on-disk layout of its `layout`."""
    priority: 50  # on the demo's critical path: the demo weights gate most training jobs
    output:
        directory("data/raw/{dataset}"),
    wildcard_constraints:
        dataset=_alternatives(d for d in DATASETS if DATASETS[d].get("demo")),
    params:
        maker=lambda w: layout(w.dataset).demo,  # stages.demo_data's --kind: the demo generator of the layout
        seed=config["demo"]["seed"],
    threads: 2
    log:
        "logs/demo_data/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.demo_data --kind {params.maker:q} --out {output:q} --seed {params.seed:q} --jobs {threads}"
        " > {log:q} 2>&1"


rule demo_weights:
    """The demo's stand-in for ImageNet weights: SqueezeNet pre-trained on the Toybox-like demo frames.

    Always 2 torch threads, whatever --cores says: CPU results depend on the thread count, and every run (local,
    cluster, DVC) must get the same weights."""
    priority: 50  # on the demo's critical path: the demo weights gate most training jobs
    input:
        dirmap="data/interim/toybox_demo/dirmap_balanced.csv",
        frames="data/interim/toybox_demo/frames",
    output:
        "data/weights/squeezenet1_0_demo.pth",
    params:
        seed=config["demo"]["seed"],
    threads: 2
    log:
        "logs/demo_weights.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.pretrain --arch squeezenet1_0 --dirmap {input.dirmap:q} --image-root {input.frames:q}"
        " --image-size 64 --epochs 6 --seed {params.seed:q} --threads 2 --out {output:q} > {log:q} 2>&1"
