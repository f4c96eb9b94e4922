# Layouts of videos (Toybox): one frame per second of every video, resized (spec 2.1).


rule extract_frames:
    """Extract video frames with ffmpeg (parallel across videos)."""
    priority: 50  # on the demo's critical path: the demo weights gate most training jobs
    input:
        lambda w: raw_root(w.dataset),
    output:
        directory("data/interim/{dataset}/frames"),
    wildcard_constraints:
        dataset=_alternatives(datasets_where(lambda lay: lay.frames)),
    params:
        fps=lambda w: DATASETS[w.dataset]["frames"]["fps"],
        size=lambda w: DATASETS[w.dataset]["frames"]["size"],
    threads: 8  # capped at --cores when run locally
    log:
        "logs/extract_frames/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.extract_frames --videos {input:q} --out {output:q} --fps {params.fps:q}"
        " --size {params.size:q} --jobs {threads} > {log:q} 2>&1"
