"""A complete example submission: a small CNN image encoder with a card.

Score it with::

    python -m harness submit examples.my_encoder:build --name my-enc --tasks mock --profile smoke

Your encoder only needs the capability methods it has (here ``encode_image``) and a
``card``. Images arrive as ``card.preprocess`` says: ``(B, channels, image_size,
image_size)`` floats, normalised with ``mean``/``std``. Return ``(B, num_features)``.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.encoders import MethodCard, Preprocess


class MyEncoder(nn.Module):
    card = MethodCard(
        name="my-enc",
        paper="example submission (harness README)",
        preprocess=Preprocess(image_size=64, channels=1, mean=(0.5,), std=(0.25,)),
        pretraining_data=(),  # e.g. ("mimic-cxr:train",): the leaderboard flags overlap with a task's test data
        capabilities=("image", "trainable"),
    )
    num_features = 32

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():  # fixed weights for the example, without touching the global RNG
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 32)
            )
        # yours would load its trained weights here, e.g. safetensors.torch.load_file(...)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def build() -> MyEncoder:
    """The factory named on the command line: returns the encoder, weights loaded."""
    return MyEncoder().eval()
