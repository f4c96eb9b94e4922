"""Which caches a training job reads, and their names (no torch import: the workflow evaluates these for every job
while it builds the DAG).

* decoded images: ``<cache dir>/images_{size}`` when hp ``image_cache`` is true;
* front features: ``<cache dir>/features_{backbone}_{weights key}_{size}`` when hp ``feature_cache`` is true and
  the job can use them (:func:`feature_cache_reason`): AugMem with a frozen SqueezeNet front and weights other than
  'none' (a random init depends on the job's seed, so its features cannot be computed once for every job).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from augmem.io import InputError

CACHEABLE_IMPLS = ("AugMem",)
# backbone names (aliases of augmem.models.backbones.BACKBONES["squeezenet"]) whose front is SqueezeNet's: no
# BatchNorm, no dropout. Kept as a literal: this module must not import torch (the workflow imports it at DAG time)
SQUEEZENET_NAMES = ("squeezenet", "resnet18")
CACHE_SUFFIX = {"image_cache": ".u8", "feature_cache": ".f16"}


def weights_key(weights: str | None) -> str | None:
    """The cache-name form of a ``weights`` value: None for 'none' (random init: not cacheable), 'imagenet', or the
    weights file's stem with every character outside ``[A-Za-z0-9_-]`` replaced by '_'."""
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        return "imagenet"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(str(weights)).stem) or "weights"


def feature_cache_reason(impl: str, hp: dict[str, Any]) -> str | None:
    """Why a job cannot train on cached front features (None when it can): AugMem with a frozen SqueezeNet front
    and weights other than 'none'."""
    if impl not in CACHEABLE_IMPLS:
        return f"agent {impl} trains its whole network"
    if not hp.get("freeze_feature_extract", False):
        return "the front is not frozen (freeze_feature_extract is false)"
    backbone = str(hp.get("backbone", "squeezenet")).lower()
    if backbone not in SQUEEZENET_NAMES:
        return f"backbone {backbone}: its front has BatchNorm, whose statistics change in train mode"
    if weights_key(hp.get("weights", "none")) is None:
        return ("weights 'none': the frozen front is a random init drawn from the job's seed, so it cannot be "
                "computed once for every job")
    return None


# The external baselines' adapted codes (spec 14) run their own network at their own input size: hp ``network: own``.
# impl -> (input size: Resize(32) of spec 14.0, or None for ``image_size``; whether that network starts from the
# job's ``weights``). With ``network: study`` they run the study's backbone at ``image_size`` from ``weights``, like
# every other agent.
OWN_NETWORKS = {
    "StableSGD": (32, False),  # reduced ResNet-18 (width 20), random init (spec 14.1)
    "LwF": (32, False),  # CIFAR-stem ResNet-18, random init (spec 14.5)
    "BiC": (32, True),  # the study's SqueezeNet 1.0 with its ImageNet weights, at 32 x 32 (spec 14.3)
    "GSS": (32, False),  # MLP or reduced ResNet-18 chosen by the dataset, random init (spec 14.2)
    "CoPE": (32, False),  # MLP or reduced ResNet-18 (GSS's), embedding size d, random init (spec 14.4)
    "REMIND": (None, True),  # ResNet-18 split at layer4.0, pretrained base, at image_size (224; spec 14.6)
}


# impl -> the torchvision architecture of an own network that starts from ImageNet weights when that differs from the
# study's backbone (the fetched file is data/weights/<arch>_imagenet.pth, rule fetch_weights)
OWN_NETWORK_ARCH = {"REMIND": "resnet18"}


def imagenet_arch(impl: str, hp: dict[str, Any]) -> str | None:
    """The architecture whose fetched ImageNet file stands in for ``weights: imagenet`` when the job runs its own
    network of another architecture (REMIND's ResNet-18), else None (the study's backbone: ``hp["backbone"]``)."""
    return OWN_NETWORK_ARCH.get(impl) if uses_own_network(impl, hp) else None


def uses_own_network(impl: str, hp: dict[str, Any]) -> bool:
    return impl in OWN_NETWORKS and hp.get("network", "study") == "own"


def input_image_size(impl: str, hp: dict[str, Any]) -> int:
    """The size of the images a job's loader yields: the adapted code's own (``network: own``) or ``image_size``."""
    if uses_own_network(impl, hp) and OWN_NETWORKS[impl][0] is not None:
        return OWN_NETWORKS[impl][0]
    return int(hp.get("image_size", 224))


def initial_weights(impl: str, hp: dict[str, Any]) -> str:
    """The ``weights`` a job really starts from: 'none' for an own network without pretraining, else hp ``weights``."""
    if uses_own_network(impl, hp) and not OWN_NETWORKS[impl][1]:
        return "none"
    return str(hp.get("weights", "none"))


def cache_prefixes(cache_dir: str, impl: str, hp: dict[str, Any]) -> dict[str, str]:
    """The caches one training job reads, as ``{"image_cache": prefix, "feature_cache": prefix}`` (either absent)."""
    size = input_image_size(impl, hp)
    out = {}
    if hp.get("image_cache", False):
        out["image_cache"] = f"{cache_dir}/images_{size}"
    if hp.get("feature_cache", False) and feature_cache_reason(impl, hp) is None:
        out["feature_cache"] = f"{cache_dir}/features_squeezenet_{weights_key(hp.get('weights'))}_{size}"
    return out


def cache_input_files(prefixes: dict[str, str]) -> dict[str, str]:
    """The files behind :func:`cache_prefixes`: ``{name: data file, name_json: description}``."""
    out = {}
    for name, prefix in prefixes.items():
        out[name] = f"{prefix}{CACHE_SUFFIX[name]}"
        out[f"{name}_json"] = f"{prefix}.json"
    return out


def cache_stage_args(prefixes: dict[str, str]) -> list[str]:
    """``--image-cache PREFIX --feature-cache PREFIX`` (those present) for ``stages.train``."""
    return [a for name, prefix in prefixes.items() for a in (f"--{name.replace('_', '-')}", prefix)]


def weights_by_key(values: Iterable[str], imagenet_file: str) -> dict[str, str]:
    """Cache-name key -> weights value for every cacheable ``weights`` value; 'imagenet' -> ``imagenet_file``.
    Two different files with the same key would share a cache: an InputError."""
    out = {"imagenet": imagenet_file}
    for value in sorted(set(values), key=str):
        key = weights_key(value)
        if key is None or value == "imagenet":
            continue
        if key in out and out[key] != value:
            raise InputError(f"weights {value!r} and {out[key]!r} have the same cache key {key!r}; rename one file")
        out[key] = value
    return out
