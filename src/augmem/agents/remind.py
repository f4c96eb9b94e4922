"""REMIND (spec 14.6; Hayes et al., ECCV 2020) as the study's adapted code runs it.

Networks (``self.model = nn.Sequential(G, F)``, so that the base class's ``front_forward``/``forward`` work):

* ``network: own``: torchvision's ResNet-18 (:mod:`augmem.models.resnet18_split`) from the job's ``weights``, at
  ``image_size`` (224: G's output is 512 x 7 x 7); G = the stem .. layer4.0, F = layer4.1 + global average pool +
  Linear(512, C);
* ``network: study``: the study's backbone split at its cut: G = its front (SqueezeNet: 512 x 13 x 13 at 224),
  F = its back.

G is frozen and always in eval mode (:class:`FrozenEval`: ``model.train()`` leaves it in eval mode), so it is a pure
function of the input: its output at ``image_size`` could come from the workflow's feature cache (not wired). F is
trained with SGD (momentum 0.9, weight decay 1e-5), one step per streamed sample.

The stream (``learn_stream``; the loop's loader yields the task in filelist order, consumed one sample at a time):

* base initialisation, on the first task: G's features of every task-0 image, a product quantiser
  (:class:`~augmem.models.product_quantizer.ProductQuantizer`, ``pq_codebooks`` x ``pq_centroids``, k-means in torch
  in place of faiss) trained on all their spatial vectors, and every task-0 image encoded into the buffer;
* per streamed sample x with label y: (1) its features quantised and decoded; (2) 2 x ``replay_samples`` distinct
  random positions of the replay list, decoded; (3) a random-resized-crop of every map (scale (2/7, 1), ratio
  (3/4, 4/3), bilinear back to its size) when ``random_resized_crops``; (4) lambda ~ Beta(alpha, alpha) and the batch
  [x; lambda R1 + (1 - lambda) R2] with labels (y_a, y_b), y_a = y_b = y for x; (5) the loss mean(lambda CE(F(.), y_a)
  + (1 - lambda) CE(F(.), y_b)) over all C outputs, one SGD step; (6) x's codes and label stored under its key and the
  key appended to the replay list; (7) the learning-rate schedule steps (see below);
* evaluation: test features quantised and decoded, then F; the argmax over all C outputs.

Switches (True = the adapted code's behaviour):

* ``remind_task_local_keys`` (q36): a sample's key is its position in its task's filelist, so task t overwrites the
  entries of every earlier task at the same positions (the replay list keeps the stale keys, as duplicates).
  Corrected: the key (task, position);
* ``remind_chained_lr_decay`` (q37): every ``lr_step``-th sample of any class multiplies the global lr by
  gamma = exp(lr_step ln(end_lr / start_lr) / ``lr_images_per_class``). Corrected: the sample of class y trains at
  start_lr gamma^floor(n_y / lr_step), n_y the samples of y streamed before it;
* ``remind_base_init_twice`` (q38): task 0 initialises the quantiser and buffer only, then is streamed again.
  Corrected: F is trained offline on the decoded task-0 buffer (``base_init_epochs`` epochs of shuffled minibatches of
  ``batch_size``, ``base_init_lr``, crops as in the stream, no mixup), and the stream starts at task 1 (further epochs
  of task 0 do nothing).

Every random draw (quantiser training, replay positions, crops, lambda, base-init shuffles) comes from
:meth:`ExternalAgent.generator` (checkpointed). Memory (spec 14.9): H x W x M uint8 codes + an 8 B label per distinct
stored entry, plus the codebooks (M x K x d/M float32); G and F are not counted. ``max_buffer_size`` eviction is not
implemented: the original's counter (959,665) is never reached.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.external import ExternalAgent, ExternalHP
from augmem.agents.hparams import hparam
from augmem.models.product_quantizer import ProductQuantizer
from augmem.models.resnet18_split import G_CHANNELS, remind_resnet18

CROP_SCALE = (2.0 / 7.0, 1.0)  # utils.py:129-196 via REMINDModel: RandomResizeCrop(7, scale=(2/7, 1))
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class REMINDHP(ExternalHP):
    """The published settings (spec 14.6: RunMeCVPR_cifar100.sh / RunMeCVPR_core50.sh; faiss's k-means defaults)."""

    optimizer: str = hparam("SGD", "REMIND trains F with SGD only", choices=("SGD",))
    lr: float = hparam(0.1, "not read by REMIND (its streaming lr is start_lr / end_lr / lr_step, the corrected "
                       "base initialisation's base_init_lr)", gt=0, affects_results=False)
    momentum: float = hparam(0.9, "SGD momentum of F", min=0)
    weight_decay: float = hparam(1e-5, "SGD weight decay of F", min=0)
    batch_size: int = hparam(128, "loader batch (the stream is still consumed one sample at a time); minibatch of the "
                             "corrected offline base initialisation", unit="images", min=1)
    pq_codebooks: int = hparam(32, "M, product-quantiser codebooks (sub-spaces); must divide G's channels (512)", min=1)
    pq_centroids: int = hparam(256, "K, centroids per codebook (256 = 8-bit codes)", min=1, max=256)
    pq_iterations: int = hparam(25, "k-means iterations of each codebook (faiss's default niter)", unit="iterations",
                                min=0)
    pq_max_points_per_centroid: int = hparam(256, "the k-means training set is subsampled to this many vectors per "
                                             "centroid (faiss's default; 0: all vectors)", min=0)
    replay_samples: int = hparam(50, "replayed samples per streamed sample (mixup: twice as many are drawn and mixed "
                                 "in pairs)", unit="samples", min=0)
    mixup: bool = hparam(True, "mix the replayed samples in pairs (published: on)")
    mixup_alpha: float = hparam(0.1, "lambda ~ Beta(alpha, alpha); 0: lambda = 1", min=0)
    random_resized_crops: bool = hparam(True, "random-resized-crop of every feature map, scale (2/7, 1)")
    start_lr: float = hparam(0.1, "learning rate of F at the start of the stream", gt=0)
    end_lr: float = hparam(0.001, "learning rate after lr_images_per_class samples of a class (gamma's target)", gt=0)
    lr_step: int = hparam(100, "StepLR step: samples of a class between two decays", unit="samples", min=1)
    lr_images_per_class: int = hparam(1300, "images per class the schedule was designed for (ImageNet: 1300): "
                                      "gamma = exp(lr_step ln(end_lr / start_lr) / lr_images_per_class)", min=1)
    base_init_epochs: int = hparam(10, "corrected base initialisation (switch remind_base_init_twice off): epochs of "
                                   "offline training of F on the decoded task-0 buffer", unit="epochs", min=0)
    base_init_lr: float = hparam(0.01, "learning rate of the corrected offline base initialisation", gt=0)


class FrozenEval(nn.Module):
    """A frozen module that stays in eval mode whatever ``train()`` asks (G of REMIND: BatchNorm statistics fixed)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.net.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenEval":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------------------------------- random draws
def _uniform(generator: torch.Generator) -> float:
    """U in (0, 1] from ``generator`` (float64)."""
    return 1.0 - float(torch.rand((), generator=generator, dtype=torch.float64))


def log_gamma_sample(a: float, generator: torch.Generator) -> float:
    """log of a Gamma(a, 1) draw from ``generator``: Marsaglia & Tsang (2000) for a >= 1, and for a < 1 the boost
    Gamma(a) = Gamma(a + 1) U^(1/a), kept in logs (U^(1/a) underflows for small a)."""
    if a <= 0:
        raise ValueError(f"gamma shape must be positive, not {a}")
    if a < 1:
        return log_gamma_sample(a + 1.0, generator) + math.log(_uniform(generator)) / a
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=generator, dtype=torch.float64))
        v = (1.0 + c * z) ** 3
        if v <= 0:
            continue
        if math.log(_uniform(generator)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return math.log(d * v)


def sample_beta(a: float, b: float, generator: torch.Generator) -> float:
    """A Beta(a, b) draw from ``generator``: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), computed from the logs."""
    diff = log_gamma_sample(b, generator) - log_gamma_sample(a, generator)
    if diff > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(diff))


def crop_params(h: int, w: int, generator: torch.Generator, scale=CROP_SCALE, ratio=CROP_RATIO):
    """(top, left, height, width) of a random-resized crop of an h x w map, torchvision's ``RandomResizedCrop``
    procedure (10 tries, then the centre crop at the ratio bounds), draws from ``generator``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale=CROP_SCALE, ratio=CROP_RATIO):
    """Every map of ``x`` (B, C, H, W) cropped at random (:func:`crop_params`) and resized back to H x W (bilinear,
    ``align_corners=False``)."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    for k in range(b):
        top, left, ch, cw = crop_params(h, w, generator, scale, ratio)
        out[k] = F.interpolate(x[k:k + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                               align_corners=False)[0]
    return out


def mixup_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
    """mean over the batch of lam CE(logits, y_a) + (1 - lam) CE(logits, y_b) (all outputs)."""
    return (lam * F.cross_entropy(logits, y_a, reduction="none")
            + (1.0 - lam) * F.cross_entropy(logits, y_b, reduction="none")).mean()


# ---------------------------------------------------------------------------------------------------- agent
class REMIND(ExternalAgent):
    name = "REMIND"
    HP = REMINDHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.pq: ProductQuantizer | None = None
        self.codes: torch.Tensor | None = None  # (capacity, H, W, M) uint8: the buffer's codes, by slot
        self.labels: torch.Tensor | None = None  # (capacity,) long
        self.slot_keys: list[tuple[int, int]] = []  # slot -> key
        self.slot_of: dict[tuple[int, int], int] = {}  # key -> slot
        self.replay: list[int] = []  # the replay list: one slot per stored sample, duplicates kept
        self.class_counts = [0] * self.n_class  # samples of each class streamed so far
        self.global_lr = float(self.hp["start_lr"])  # the chained schedule's lr (q37)
        self.base_task: int | None = None
        self.last_loss = None

    @classmethod
    def extra_checks(cls, hp):
        out = super().extra_checks(hp)
        if hp.get("network") == "own" and G_CHANNELS % int(hp["pq_codebooks"]) != 0:
            out.append(("pq_codebooks", f"{hp['pq_codebooks']} codebooks do not divide ResNet-18's {G_CHANNELS} "
                                        "channels of layer4.0"))
        if float(hp["end_lr"]) > float(hp["start_lr"]):
            out.append(("end_lr", "end_lr must not exceed start_lr (a decaying schedule)"))
        return out

    # ------------------------------------------------------------------------------------------------ network
    def own_split(self) -> tuple[nn.Module, nn.Module]:
        """(G, F) of the own network: torchvision's ResNet-18 from ``weights``, split after layer4.0."""
        return remind_resnet18(self.n_class, self.hp["weights"])

    def build_model(self) -> nn.Module:
        if self.own_network:
            g, f = self.own_split()
        else:
            study = super().build_model()
            g, f = study[0], study[1]
        return nn.Sequential(FrozenEval(g), f)

    def build_optimizer(self, params) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        return torch.optim.SGD(params, lr=float(self.hp["start_lr"]), momentum=float(self.hp["momentum"]),
                               weight_decay=float(self.hp["weight_decay"]))

    @property
    def f_net(self) -> nn.Module:
        return self.model[1]

    def result_notes(self) -> list[str]:
        if self.own_network and self.hp["weights"] == "imagenet":
            return ["REMIND (ImageNet-1k proxy): the own ResNet-18 starts from torchvision's ImageNet-1k weights in "
                    "place of the missing ImageNet-100 base checkpoint (spec 14.6, option 3); F's head is random"]
        return []

    # ------------------------------------------------------------------------------------------------ schedule
    @property
    def gamma(self) -> float:
        return math.exp(int(self.hp["lr_step"]) * math.log(float(self.hp["end_lr"]) / float(self.hp["start_lr"]))
                        / int(self.hp["lr_images_per_class"]))

    def sample_lr(self, y: int) -> float:
        """The lr the next sample of class ``y`` trains at."""
        if self.switches.remind_chained_lr_decay:
            return self.global_lr
        return float(self.hp["start_lr"]) * self.gamma ** (self.class_counts[y] // int(self.hp["lr_step"]))

    def count_sample(self, y: int) -> None:
        """The schedulers' step after a sample of class ``y``."""
        self.class_counts[y] += 1
        if self.switches.remind_chained_lr_decay and self.class_counts[y] % int(self.hp["lr_step"]) == 0:
            self.global_lr *= self.gamma

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------------------------------------ buffer
    def key(self, task: int, index: int) -> tuple[int, int]:
        """The buffer key of the sample at ``index`` of ``task``'s filelist: (0, index) while
        ``remind_task_local_keys`` (the task is dropped: q36), else (task, index)."""
        return (0, int(index)) if self.switches.remind_task_local_keys else (int(task), int(index))

    def add_entry(self, key: tuple[int, int], codes: torch.Tensor, label: int) -> None:
        """latent_dict[key] = (codes, label); the key's slot appended to the replay list."""
        slot = self.slot_of.get(key)
        if slot is None:
            slot = len(self.slot_keys)
            if self.codes is None:
                self.codes = torch.empty((64, *codes.shape), dtype=torch.uint8, device=self.device)
                self.labels = torch.empty(64, dtype=torch.long, device=self.device)
            if slot >= self.codes.shape[0]:
                grow = self.codes.shape[0]
                self.codes = torch.cat([self.codes, torch.empty_like(self.codes[:grow])])
                self.labels = torch.cat([self.labels, torch.empty_like(self.labels[:grow])])
            self.slot_keys.append(key)
            self.slot_of[key] = slot
        self.codes[slot] = codes
        self.labels[slot] = int(label)
        self.replay.append(slot)

    def draw_positions(self, n: int) -> list[int]:
        """min(n, len(replay)) distinct random positions of the replay list: rounds of n uniform draws (with
        replacement) until enough distinct ones are collected, in order of first appearance (the original's
        ``randint``)."""
        size = len(self.replay)
        n = min(int(n), size)
        gen = self.generator()
        seen: dict[int, None] = {}
        while len(seen) < n:
            for r in torch.randint(0, size, (n,), generator=gen).tolist():
                seen.setdefault(r, None)
        return list(seen)[:n]

    def quantise(self, f: torch.Tensor) -> torch.Tensor:
        """Feature maps -> their PQ reconstruction."""
        return self.pq.decode_maps(self.pq.encode_maps(f))

    # ------------------------------------------------------------------------------------------------ training
    def replay_step(self, new: torch.Tensor, y: int) -> float:
        """Steps 2-5 for one streamed sample (``new``: its decoded maps (1, d, H, W)): replay, crops, mixup, one SGD
        step at the optimiser's current lr. Returns the loss."""
        gen = self.generator()
        mix = bool(self.hp["mixup"])
        r = int(self.hp["replay_samples"])
        pos = self.draw_positions(2 * r if mix else r)
        if mix:
            pos = pos[:len(pos) - len(pos) % 2]
        slots = torch.as_tensor([self.replay[p] for p in pos], dtype=torch.long, device=self.device)
        labels = self.labels[slots] if len(pos) else torch.empty(0, dtype=torch.long, device=self.device)
        batch = torch.cat([new, self.pq.decode_maps(self.codes[slots])]) if len(pos) else new
        if self.hp["random_resized_crops"]:
            batch = random_resized_crop(batch, gen)
        yt = torch.tensor([int(y)], dtype=torch.long, device=self.device)
        lam = 1.0
        if mix and len(pos):
            n = len(pos) // 2
            alpha = float(self.hp["mixup_alpha"])
            lam = sample_beta(alpha, alpha, gen) if alpha > 0 else 1.0
            x = torch.cat([batch[:1], lam * batch[1:1 + n] + (1.0 - lam) * batch[1 + n:]])
            y_a, y_b = torch.cat([yt, labels[:n]]), torch.cat([yt, labels[n:]])
        else:
            x, y_a, y_b = batch, torch.cat([yt, labels]), torch.cat([yt, labels])
        self.model.train()
        loss = mixup_loss(self.f_net(x), y_a, y_b, lam)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    def stream_sample(self, f: torch.Tensor, y: int, key: tuple[int, int]) -> None:
        """One streamed sample (G's maps ``f`` (1, d, H, W), label ``y``): steps 1-7."""
        codes = self.pq.encode_maps(f)
        self.set_lr(self.sample_lr(y))
        self.replay_step(self.pq.decode_maps(codes), y)
        self.add_entry(key, codes[0], y)
        self.count_sample(y)

    @torch.no_grad()
    def extract(self, loader) -> tuple[torch.Tensor, torch.Tensor]:
        """G's maps and the labels of a loader's images, in its order."""
        feats, labels = [], []
        for x, y in loader:
            feats.append(self.front_forward(x.to(self.device)).float())
            labels.append(y.to(self.device).long())
        return torch.cat(feats), torch.cat(labels)

    def base_init(self, loader, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-3 of the base initialisation: G's maps of the task, the quantiser trained on all their spatial
        vectors, every image encoded into the buffer. Returns (maps, labels)."""
        feats, labels = self.extract(loader)
        d = feats.shape[1]
        if d % int(self.hp["pq_codebooks"]) != 0:
            raise ValueError(f"REMIND: {self.hp['pq_codebooks']} codebooks do not divide G's {d} channels")
        pq = ProductQuantizer(d, int(self.hp["pq_codebooks"]), int(self.hp["pq_centroids"]),
                              int(self.hp["pq_iterations"]), int(self.hp["pq_max_points_per_centroid"]))
        pq.fit(feats.permute(0, 2, 3, 1).reshape(-1, d), self.generator())
        self.pq = pq
        self.base_task = int(task)
        for i, (codes, y) in enumerate(zip(pq.encode_maps(feats), labels.tolist())):
            self.add_entry(self.key(task, i), codes, y)
        return feats, labels

    def base_train(self) -> None:
        """Corrected base initialisation (q38): F trained offline on the decoded buffer (task 0), ``base_init_epochs``
        epochs of shuffled minibatches (crops as in the stream; minibatches of one image skipped: BatchNorm)."""
        gen = self.generator()
        params = [p for p in self.f_net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=float(self.hp["base_init_lr"]), momentum=float(self.hp["momentum"]),
                              weight_decay=float(self.hp["weight_decay"]))
        n = len(self.slot_keys)
        bs = int(self.hp["batch_size"])
        self.model.train()
        for _ in range(int(self.hp["base_init_epochs"])):
            order = torch.randperm(n, generator=gen).to(self.device)
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                if len(idx) < 2:
                    continue
                x = self.pq.decode_maps(self.codes[idx])
                if self.hp["random_resized_crops"]:
                    x = random_resized_crop(x, gen)
                loss = F.cross_entropy(self.f_net(x), self.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.last_loss = float(loss.detach())

    def stream(self, batches, task: int) -> None:
        """Stream (maps, labels) batches one sample at a time, keys by position in the task."""
        i = 0
        for f, y in batches:
            for j, label in enumerate(y.tolist()):
                self.stream_sample(f[j:j + 1], int(label), self.key(task, i))
                i += 1

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        if self.pq is None:
            feats, labels = self.base_init(loader, task)
            if not self.switches.remind_base_init_twice:
                self.base_train()
                return
            bs = int(self.hp["batch_size"])
            self.stream(((feats[s:s + bs], labels[s:s + bs]) for s in range(0, len(labels), bs)), task)
            return
        if task == self.base_task and not self.switches.remind_base_init_twice:
            return  # corrected: the base task is not streamed
        # G is frozen (no parameter requires a gradient): its maps carry no graph
        self.stream(((self.front_forward(x.to(self.device)).float(), y) for x, y in loader), task)

    # ------------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labels from the argmax over all C outputs of F on the quantised and decoded G maps (``topk`` order while
        ``topk_prediction_ties``)."""
        self.model.eval()
        f = self.front_forward(x.to(self.device)).float()
        if self.pq is not None:
            f = self.quantise(f)
        scores = self.f_net(f)
        if self.switches.topk_prediction_ties:
            return {"acc": scores.topk(1, 1, True, True).indices[:, 0]}
        return {"acc": scores.argmax(1)}

    def memory_bytes(self) -> dict[str, int]:
        """{"pq_codes": H W M B + an 8 B label per distinct stored entry, "codebooks": M K (d/M) 4 B} (spec 14.9)."""
        if self.pq is None or self.codes is None:
            return {}
        per = int(torch.tensor(self.codes.shape[1:]).prod()) + 8
        return {"pq_codes": len(self.slot_keys) * per, "codebooks": self.pq.nbytes()}

    # ------------------------------------------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        n = len(self.slot_keys)
        state["remind"] = {
            "pq": None if self.pq is None else self.pq.state(),
            "codes": None if self.codes is None else self.codes[:n].cpu().clone(),
            "labels": None if self.labels is None else self.labels[:n].cpu().clone(),
            "slot_keys": torch.tensor(self.slot_keys, dtype=torch.long).view(-1, 2),
            "replay": torch.tensor(self.replay, dtype=torch.long),
            "class_counts": list(self.class_counts),
            "global_lr": float(self.global_lr),
            "base_task": self.base_task,
        }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        st = state["remind"]
        self.pq = None if st["pq"] is None else ProductQuantizer.from_state(st["pq"], self.device)
        self.codes = None if st["codes"] is None else st["codes"].to(self.device).clone()
        self.labels = None if st["labels"] is None else st["labels"].to(self.device).clone()
        self.slot_keys = [(int(a), int(b)) for a, b in st["slot_keys"].tolist()]
        self.slot_of = {k: i for i, k in enumerate(self.slot_keys)}
        self.replay = [int(v) for v in st["replay"].tolist()]
        self.class_counts = [int(v) for v in st["class_counts"]]
        self.global_lr = float(st["global_lr"])
        self.base_task = None if st["base_task"] is None else int(st["base_task"])

