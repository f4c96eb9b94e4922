# Layouts whose balanced images are re-distributed (iLab-2M-Light): from one massed folder to
# <class>/obj_<o>/sess_<s>/ (spec 2.5), with hard links where possible.


rule distribute_ilab:
    input:
        dirmap=lambda w: f"data/interim/{w.dataset}/{layouts.BALANCING[layout(w.dataset).balance].output}",
        src=lambda w: raw_root(w.dataset),
    output:
        images=directory("data/interim/{dataset}/images"),
        dirmap="data/interim/{dataset}/dirmap_distributed.csv",
    wildcard_constraints:
        dataset=_alternatives(datasets_where(lambda lay: lay.distribute)),
    params:
        fps=lambda w: DATASETS[w.dataset]["balance"]["frames_per_session"],
    log:
        "logs/distribute/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.distribute --dirmap {input.dirmap:q} --src {input.src:q} --out-root {output.images:q}"
        " --out-dirmap {output.dirmap:q} --frames-per-session {params.fps:q} > {log:q} 2>&1"
