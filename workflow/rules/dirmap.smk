# Dataset indexes ("dirmaps", spec 2.1, 2.3, 2.7 and 12.8) and their statistics check (spec 2.6). How a raw tree is
# read is its layout's (augmem.data.layouts): the rules below only look the dataset's layout up.


rule dirmap:
    """Index every image: class, object, session, im_num, im_path (the raw, unbalanced index)."""
    priority: 50  # on the demo's critical path: the demo weights gate most training jobs
    input:
        unpack(_dirmap_inputs),
    output:
        dirmap="data/interim/{dataset}/dirmap_raw.csv",
    wildcard_constraints:
        dataset=_alternatives(datasets_where(lambda lay: not lay.class_table)),
    params:
        layout=lambda w: layout(w.dataset).name,
        # tables the layout's reader needs (Toybox: category -> class and transformation -> session maps shipped in
        # params/, declared inputs)
        extra=lambda w, input: [a for m in layout(w.dataset).dirmap_maps for a in (m.option, input[m.name])],
    log:
        "logs/dirmap/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.dirmap --layout {params.layout:q} --root {input.src:q} --out {output.dirmap:q}"
        " {params.extra:q} > {log:q} 2>&1"


use rule dirmap as dirmap_cifar100 with:
    output:
        dirmap="data/interim/{dataset}/dirmap_raw.csv",
        classes="data/interim/{dataset}/classes.csv",  # the class table (class name, label)
    wildcard_constraints:
        # layouts whose dirmap step also writes a class table (class_folders: CIFAR-100 and users' own trees)
        dataset=_alternatives(datasets_where(lambda lay: lay.class_table)),
    params:
        layout=lambda w: layout(w.dataset).name,
        extra=lambda w, input, output: [a for m in layout(w.dataset).dirmap_maps for a in (m.option, input[m.name])]
        + ["--classes-out", output.classes],


rule dirmap_stats:
    """Compute the dirmap statistics of spec 2.6 and assert them against the dataset's expected_stats, and its number
    of classes against the dataset's n_class (a mismatch stops here, before the image cache and the filelists)."""
    input:
        lambda w: final_dirmap(w.dataset),
    output:
        "data/interim/{dataset}/dirmap_stats.json",
    params:
        expect=lambda w: [f"{k}={v}" for k, v in (DATASETS[w.dataset].get("expected_stats") or {}).items()],
        fps=lambda w: DATASETS[w.dataset].get("balance", {}).get("frames_per_session", 15),
        n_class=lambda w: DATASETS[w.dataset]["n_class"],
    log:
        "logs/dirmap_stats/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.dirmap_stats --dirmap {input:q} --out {output:q} --frames-per-session {params.fps:q}"
        " --dataset-classes {params.n_class:q} --expect {params.expect:q} > {log:q} 2>&1"
