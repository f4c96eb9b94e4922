"""Pre-train a torchvision backbone on another dataset: the demo's stand-in for ImageNet weights.

The paper's agents start from ImageNet weights, and AugMem freezes the front of the network. Without a network the
demo cannot fetch them, and a *random* frozen front gives AugMem nothing to work with, so the demo pre-trains
SqueezeNet on a different demo dataset (the Toybox-like frames) and uses that state dict as `weights` for the
CORe50-like stream, exactly as a local ImageNet weights file would be used. The state dict has torchvision's layout
(1000-class head), so it loads through the same code path as real weights.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

from augmem.io import InputError
from augmem.models.backbones import ARCHS as BACKBONE_ARCHS

ARCHS = {arch: spec.constructor for arch, spec in BACKBONE_ARCHS.items()}  # torchvision name -> constructor


def load_images(dirmap: pd.DataFrame, image_root, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a dirmap as a normalised tensor, with labels 0..K-1 in sorted class order."""
    tf = T.Compose([T.Resize([image_size, image_size]), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    classes = sorted(dirmap["class"].unique())
    index = {c: i for i, c in enumerate(classes)}
    xs, ys = [], []
    for row in dirmap.itertuples(index=False):
        path = f"{image_root}/{row.im_path}"
        try:
            with Image.open(path) as im:
                xs.append(tf(im.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot be read as an image ({exc})") from exc
        ys.append(index[row[list(dirmap.columns).index("class")]])
    return torch.stack(xs), torch.tensor(ys)


def pretrain(arch: str, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
             seed: int) -> dict[str, torch.Tensor]:
    """Train ``arch`` (randomly initialised, 1000 outputs) with SGD on (x, y); returns its state dict."""
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = ARCHS[arch](weights=None)
    # Adam: SqueezeNet trained from scratch with plain SGD barely moves in a few epochs (dead ReLU head).
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=gen)
    n_class = int(y.max()) + 1
    for epoch in range(epochs):
        model.train()
        correct = total = 0
        for xb, yb in loader:
            logits = model(xb)[:, :n_class]
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == yb).sum())
            total += len(yb)
        print(f"pretrain epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}, train acc {100 * correct / total:.1f} %",
              flush=True)
    return model.state_dict()
