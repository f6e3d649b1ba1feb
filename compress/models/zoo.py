"""Built-in models for small images, each sized by width and depth options.

Every builder takes `in_channels`, `num_classes` and `image_size` (filled from the data) plus its
own options, and returns a plain `nn.Module` made of standard layers, so pruning, export and every
runtime handle it without special cases.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., 2016): two 3x3 convolutions and an identity shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: list[int], blocks: list[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        layers, cin = [], widths[0]
        for stage, (cout, count) in enumerate(zip(widths, blocks, strict=True)):
            for i in range(count):
                layers.append(BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet(
    in_channels: int, num_classes: int, image_size: int, width: int = 32, blocks: tuple[int, ...] = (1, 1, 1, 1)
) -> nn.Module:
    """ResNet-style CNN for small images; stage widths double from `width` (32 -> ~1.2 M params)."""
    widths = [width * 2**i for i in range(len(blocks))]
    return ResNet(in_channels, num_classes, widths, list(blocks))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al., 2018): expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def mobilenetv2(
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int = 16,
    blocks: tuple[int, ...] = (1, 2, 2, 2),
    expand: int = 6,
) -> nn.Module:
    """MobileNetV2-style depthwise CNN for small images; stage widths double from `width`."""
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6(True))
    layers, cin = [stem], width
    for stage, count in enumerate(blocks):
        cout = width * 2**stage
        for i in range(count):
            layers.append(InvertedResidual(cin, cout, 2 if (i == 0 and stage > 0) else 1, expand))
            cin = cout
    head = cin * 4
    layers += [nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6(True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(head, num_classes))


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections, so heads can be pruned."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2) for t in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2021) with a class token and learned positions."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, patch: int, dim: int, depth: int,
                 heads: int, mlp_ratio: float) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not divisible by patch {patch}")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit(
    in_channels: int,
    num_classes: int,
    image_size: int,
    patch: int = 4,
    dim: int = 128,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
) -> nn.Module:
    """Small ViT for small images (dim 128, depth 4 -> ~0.5 M params)."""
    return ViT(in_channels, num_classes, image_size, patch, dim, depth, heads, mlp_ratio)


def frcnn(
    in_channels: int,
    num_classes: int,
    image_size: int,
    widths: tuple[int, ...] = (16, 32, 64, 96),
    channels: int = 64,
    head: int = 256,
    max_detections: int = 100,
) -> nn.Module:
    """A small Faster R-CNN (compress.detection.frcnn); for task `detection` only."""
    from compress.detection.frcnn import small_frcnn

    return small_frcnn(in_channels, num_classes, image_size, widths, channels, head, max_detections)


def detr(
    in_channels: int,
    num_classes: int,
    image_size: int,
    d_model: int = 128,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    queries: int = 25,
    heads: int = 4,
    ffn: int = 256,
    backbone: str = "resnet18",
) -> nn.Module:
    """DETR (Carion et al., 2020) from Hugging Face transformers, randomly initialised: a ResNet
    backbone (resnet10/18/34/50) and a small encoder-decoder; `queries` bounds the detections per
    image. For task `detection` only: it returns detections, not logits (compress.detection.detr)."""
    from compress.detection.detr import build

    return build("detr", num_classes, in_channels, d_model=d_model, encoder_layers=encoder_layers,
                 decoder_layers=decoder_layers, queries=queries, heads=heads, ffn=ffn, backbone=backbone)  # fmt: skip


def deformable_detr(
    in_channels: int,
    num_classes: int,
    image_size: int,
    d_model: int = 128,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    queries: int = 25,
    heads: int = 4,
    ffn: int = 256,
    backbone: str = "resnet18",
    levels: int = 3,
) -> nn.Module:
    """Deformable DETR (Zhu et al., 2021) from Hugging Face transformers, randomly initialised, reading
    `levels` feature maps (the last three backbone stages, then stride-2 convolutions). For task
    `detection` only (compress.detection.detr)."""
    from compress.detection.detr import build

    return build("deformable_detr", num_classes, in_channels, d_model=d_model, encoder_layers=encoder_layers,
                 decoder_layers=decoder_layers, queries=queries, heads=heads, ffn=ffn, backbone=backbone,
                 levels=levels)  # fmt: skip


# The names Zoo answers to; frcnn, detr and deformable-detr are detection models (task: detection).
BUILDERS = {"resnet": resnet, "mobilenetv2": mobilenetv2, "vit": vit, "frcnn": frcnn, "detr": detr,
            "deformable-detr": deformable_detr}  # fmt: skip
DETECTORS = ("frcnn", "detr", "deformable-detr")  # builders of detectors, valid only for task detection
