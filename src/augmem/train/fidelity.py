"""Training-side fidelity switches: each quirk of the published code that changes results is one named switch.

``reference`` reproduces the published behaviour (spec section 12), ``corrected`` fixes every quirk. Data-side
switches (task filelists) live in :mod:`augmem.data.fidelity`. A switch is True when the *quirk* is active.
Individual switches can be overridden per run (``switch_overrides`` in params), e.g. to study one quirk alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainSwitches:
    # --- training loop (spec 5.1, 12.11-12.14) ---
    keep_best_on_test: bool = True
    """12.12: keep-best picks the epoch with the best *test* accuracy (the original's --validate crashed). Corrected:
    pick on a held-out validation split (25 % of the test set, seeded by the run; reported test accuracy then uses
    the remaining 75 %)."""
    continue_after_divergence: bool = True
    """Training goes on when the network diverges: with several epochs per task the published EWC, online EWC and MAS
    drive the weights to 1e5 and MAS to NaN, and the run still reports the accuracies of the broken network
    (``meta.diverged`` in metrics.json records the first task and epoch with non-finite weights or loss). Corrected:
    the loop checks after every epoch that the weights of ``agent.model`` (and the agent's ``last_loss``, when it keeps
    one) are finite, and stops with an error (``TrainingDiverged``) naming the agent, the task and the epoch."""
    topk_prediction_ties: bool = True
    """5.1: predictions are ``output[:, active].topk(1, 1, True, True)`` (the original's utils/metric.py), whose
    choice among tied (or NaN) scores differs from ``argmax`` (first index). It matters when a diverged network gives
    all-zero or NaN scores: reported accuracies then differ by up to 50 points on identical weights. Corrected:
    ``argmax`` (first of the tied classes)."""

    # --- AugMem (spec 6.4, 12.24) ---
    augmem_bce_direct_student: bool = True
    """12.24: BCE argument order. Reference: the main loss distils the direct path towards the detached memory path,
    and the replay distillation term has a constant input (zero gradient). Corrected: the memory path / replay output
    is distilled towards the stored (teacher) logits as the paper describes: main loss BCE(sigma(out), sigma(direct).detach()),
    replay BCE(sigma(replay_out), sigma(stored_logits))."""
    augmem_reg_ref_every_step: bool = True
    """12.24: the memory-regulariser reference M_bar is refreshed after every main step (so the term only penalises
    the movement since the last step). Corrected: M_bar = the memory at the end of the previous task."""
    augmem_torch17_zero_grad: bool = True
    """12.24: torch-1.7 ``zero_grad`` semantics (gradients zeroed in place, never set to None), so momentum and weight
    decay keep moving M during replay steps. Corrected: ``zero_grad(set_to_none=True)``."""
    augmem_hardcoded_lr: bool = True
    """6.4 step 4: after the first epoch of every task >= 1 the learning rate is set to 0.001 whatever --lr was.
    Corrected: the configured lr is kept."""
    augmem_untrimmed_storage: bool = True
    """12.24: classes absent from the current data keep their old storage size, so storage can exceed memory_size.
    Corrected: every class is trimmed to floor(memory_size / |active|) after each update."""
    augmem_top1_only_replay: bool = True
    """12.24: replay rebuilds the read from the top-1 slot only (correct only for memory_topK = 1; K > 1 silently
    mixes batch and content). Corrected: for K > 1 the read is the mean of the K stored slots at each location."""
    augmem_argsort_slot_ties: bool = True
    """6.4: the stored / visualised top-K slots of each key are ``torch.argsort(att, descending=True)[..., :K]``
    (storage and herding updates), whose order among tied attention values differs from ``topk``'s. Keys whose
    feature channels are all zero give an exact S-way tie (0.1 % of keys, but a third of the samples on the demo
    stream), so the stored hypotheses differ. Corrected: ``topk`` (faster; ties broken by topk's order)."""

    # --- regularisers L2 / EWC / online EWC / SI / MAS (spec 6.2, 12.23) ---
    reg_importance_every_epoch: bool = True
    """12.23: importance is recomputed after every epoch, and the online variants (MAS, SI, EWC_online) add it in
    place into the stored importance even in epochs that are not the last of a task. Corrected: importance is
    computed once at the end of each task and accumulated only then."""

    # --- rehearsal / GEM (spec 6.3, 12.21) ---
    rehearsal_as_finetune: bool = True
    """12.21: NaiveRehearsal's learn_stream is dead code, so it trains exactly like NormalNN. Corrected: a reservoir
    memory of memory_size images is replayed alongside the stream."""
    gem_as_finetune: bool = True
    """12.21: GEM's task memory is never filled, so it trains exactly like NormalNN. Corrected: the GEM QP projection
    over per-task memories."""

    agem_full_memory_reference: bool = True
    """12.25: A-GEM's reference gradient is recomputed over the *entire* memory at every step (slow). Corrected: one
    random memory batch per step, as the A-GEM paper does."""

    # --- iCaRL (spec 6.3, 12.22) ---
    icarl_class_score_features: bool = True
    """12.22: the 'features' for exemplars and nearest-mean classification are the C pooled class scores. Corrected:
    the penultimate features (the 512-channel map before the classifier conv, globally average-pooled)."""
    icarl_zip_truncation: bool = True
    """12.22: training of each task >= 1 stops after as many batches as the replay loader has (zip). Corrected: all
    training batches are used, the replay loader cycles."""
    icarl_misaligned_distill: bool = True
    """12.22: distillation targets are computed on one shuffle of the replay loader and used on another. Corrected:
    targets are the old model's outputs on the same replay batch."""
    icarl_untrimmed_exemplars: bool = True
    """12.22: old exemplar sets are never trimmed (the trim rebinds a loop variable) and herding allows repeats.
    Corrected: sets are trimmed to memory_size // seen classes and herding picks distinct items."""
    icarl_update_every_epoch: bool = True
    """12.22: the exemplar memory is updated after every epoch, not once per task. Corrected: once per task."""
    herding_frobenius_norm: bool = True
    """12.22/6.4: herding divides the candidate means by the Frobenius norm of the whole candidate matrix instead of
    normalising each candidate. Corrected: each candidate mean is L2-normalised. (iCaRL and AugMem herding.)"""

    # --- external baselines (spec 14): Stable SGD, BiC, LwF ---
    external_drop_last: bool = True
    """14.1 q5, 14.3, 14.5 q35: the adapted codes' training loaders drop the last incomplete batch
    (``drop_last=True``: up to B-1 images per task and epoch are never seen). Corrected: every image is used."""
    stable_sgd_fixed_blocks: bool = True
    """14.1 q2: the network always has 100 outputs and the task mask covers a hard-coded block of the variant's width
    (5 in the package variant, 2 in the top-level one), whatever the dataset. Corrected: C outputs, and the mask is
    the current task's own classes."""
    stable_sgd_variant_eval: bool = True
    """14.1 q1: the headline accuracy is the variant's own protocol: package variant (hp ``variant: package``) the
    argmax over all 100 outputs (path ``ci100``), top-level variant (``variant: toplevel``) the 2-way argmax inside
    each test image's own task (path ``ti``, task-incremental). Corrected: class-incremental over the seen classes
    (path ``acc``). All three paths are recorded in both fidelities."""
    bic_fixed_bias_blocks: bool = True
    """14.3 q20: bias layer k corrects the fixed logit columns [5k, 5k+5) and stage 2 trains layer i (the task
    index), which for 2-class tasks does not cover the new classes. Corrected: one (alpha, beta) per task, applied to
    that task's classes."""
    bic_hardcoded_alpha_slice: bool = True
    """14.3 q21: alpha = (S - 5) / S and the distillation covers the first S - 2 logits (CIFAR-100's 5-class tasks
    hard-coded; negative alpha on 2-class tasks). Corrected: alpha = S_old / S and distillation over the S_old old
    classes."""
    bic_one_exemplar_val_is_train: bool = True
    """14.3 q22: one exemplar per class, and the 'validation' list is the training list, so each task is trained
    twice per epoch and stage 2 fits the bias on one already-trained image per class. Corrected: the paper's BiC: a
    memory of ``memory_size`` exemplars split 9:1 (with the new data) into training and held-out validation, and the
    bias layer trained on the held-out part."""
    bic_teacher_train_mode: bool = True
    """14.3 q23: the old model (teacher) is in train mode, so its dropout is active, and the temperature is 5 (the
    paper: 2). Corrected: teacher in eval mode, T = 2."""
    lwf_shared_backbone: bool = True
    """14.5 q32: one feature extractor object is shared by all runs of a process, so run r starts from the features
    trained through runs 0..r-1 (only the head is new). Reference replays that: job r first trains runs 0..r-1 in
    order (the workflow gives it their filelists) and keeps their feature extractor. Corrected: a fresh network per
    run."""
    lwf_sigmoid_distillation: bool = True
    """14.5: the adapted code's loss is iCaRL's: binary cross-entropy of every output against the old model's
    sigmoids (old classes) and one-hot targets (new classes). Corrected: Li & Hoiem's LwF on the single growing head:
    cross-entropy over the seen classes plus the temperature-2 softmax distillation of the old classes' outputs."""

    # --- GSS-Greedy (spec 14.2) ---
    gss_epochs_straddle: bool = True
    """14.2 q11: task 0 is listed n_epochs times in a row as one long stream, so an incomplete batch at the end of an
    epoch is completed with the first images of the next epoch of the same task (only the task's last epoch ends
    with a smaller batch). Corrected: every epoch ends with its own last batch."""
    gss_batch_scores_misaligned: bool = True
    """14.2 q12: when the full buffer is updated, slot I_j receives the j-th sample of the current batch x but the
    score c_j of the ring buffer's j-th sample (R and x differ when R carried samples over from an earlier batch).
    Corrected: slot I_j receives R[j] with its score c_j."""

    # --- REMIND (spec 14.6) ---
    remind_task_local_keys: bool = True
    """14.6 q36: the replay buffer is keyed by the position in the task's own filelist, so the image at position i of
    task t overwrites the codes and label of position i of every earlier task (after task t the buffer holds almost
    only task t; the replay list keeps the stale duplicate keys). Corrected: a global key (task, index)."""
    remind_chained_lr_decay: bool = True
    """14.6 q37: C StepLR schedulers chained on one optimiser: every ``lr_step``-th sample of any class multiplies the
    global lr by gamma = exp(lr_step * ln(end_lr / start_lr) / 1300) (~0.7017: lr ~1.4e-5 by the end of CIFAR-100's
    task 0). Corrected: the intended per-class lr start_lr * gamma ** floor(n_y / lr_step), set for each sample from
    its class's own count n_y."""
    remind_base_init_twice: bool = True
    """14.6 q38: task 0 only initialises the product quantiser and the buffer (no training of G or F) and is then
    streamed again like any later task. Corrected: upstream base initialisation: F is trained offline on the decoded
    task-0 features (``base_init_epochs``), and the stream starts at task 1."""


#: implementations whose reference job r continues from runs 0..r-1 (their switch): the adapted code shared state
#: across the runs of one process (LwF's feature extractor, spec 14.5 q32)
CHAINED_RUNS = {"LwF": "lwf_shared_backbone"}


def chains_runs(impl: str, fidelity: str, overrides: dict | None = None) -> bool:
    """True when a job of ``impl`` at ``fidelity`` (with the hp's switch overrides) must first train runs 0..r-1."""
    switch = CHAINED_RUNS.get(impl)
    return switch is not None and bool(getattr(train_switches(fidelity, overrides), switch))


def switch_names() -> list[str]:
    return [f.name for f in fields(TrainSwitches)]


def train_switches(fidelity: str, overrides: dict | None = None) -> TrainSwitches:
    """The switch bundle for a fidelity ('reference': every quirk on; 'corrected': every quirk off)."""
    if fidelity == "reference":
        base = TrainSwitches()
    elif fidelity == "corrected":
        base = TrainSwitches(**{f.name: False for f in fields(TrainSwitches)})
    else:
        raise ValueError(f"unknown fidelity {fidelity!r}; expected 'reference' or 'corrected'")
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(TrainSwitches)}
        if unknown:
            raise ValueError(f"unknown training switch(es): {sorted(unknown)}")
        base = dataclasses.replace(base, **overrides)
    return base
