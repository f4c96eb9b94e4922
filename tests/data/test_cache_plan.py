"""The input plan of a training job (data/cache_plan.py): image size and initial weights per network, cache names."""
from __future__ import annotations

from augmem.data.cache_plan import OWN_NETWORKS, cache_prefixes, initial_weights, input_image_size


def test_own_networks_run_at_their_own_input_size_and_weights():
    hp = {"image_size": 64, "weights": "data/weights/demo.pth", "image_cache": True, "feature_cache": True}
    for impl in ("StableSGD", "LwF", "BiC", "GSS"):
        assert OWN_NETWORKS[impl][0] == 32
        assert input_image_size(impl, dict(hp, network="own")) == 32
        assert input_image_size(impl, dict(hp, network="study")) == 64
        assert cache_prefixes("c", impl, dict(hp, network="own")) == {"image_cache": "c/images_32"}
        assert initial_weights(impl, dict(hp, network="study")) == "data/weights/demo.pth"
    # random-init own networks start from no weights; BiC's own network is the pretrained SqueezeNet at 32 px
    assert initial_weights("StableSGD", dict(hp, network="own")) == "none"
    assert initial_weights("LwF", dict(hp, network="own")) == "none"
    assert initial_weights("BiC", dict(hp, network="own")) == "data/weights/demo.pth"
    # REMIND's own ResNet-18 reads image_size; agents of the study ignore `network`
    assert input_image_size("REMIND", dict(hp, network="own")) == 64
    assert input_image_size("NormalNN", dict(hp, network="own")) == 64
    assert initial_weights("NormalNN", dict(hp, network="own")) == "data/weights/demo.pth"
