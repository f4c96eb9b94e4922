from augmem.models.backbones import Backbone, build_backbone

__all__ = ["Backbone", "build_backbone"]
