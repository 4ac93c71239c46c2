"""The reference generator: a 2D U-Net over slices or 2.5D slice stacks (channels).

Small on purpose (1.3 M parameters at the default width and depth): it trains on two CPU
cores in under half an hour and runs on a CPU in the serving path, yet its receptive field (over
100 pixels) spans the skull, scalp and brain together, which is what tells bone from
air when both are dark on MR. Batch normalisation folds into the convolutions in
inference, so a slice's output never depends on the other slices of its batch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import cast

import onnx
import torch
from onnx import numpy_helper
from torch import nn

ARCHITECTURE_KEY = "dicom_node.architecture"
"""``metadata_props`` key of the exported network's construction parameters (JSON)."""


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    base: int = 16
    depth: int = 4
    """Number of 2× poolings: H and W must be multiples of 2**depth."""

    @property
    def tile_multiple(self) -> int:
        return int(2**self.depth)

    def to_json(self) -> str:
        return json.dumps({"architecture": "unet2d", **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> UNetConfig:
        data = json.loads(text)
        if data.pop("architecture", None) != "unet2d":
            raise ValueError(f"not a unet2d architecture: {text}")
        return cls(**data)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """(N, in_channels, H, W) → (N, 1, H, W), linear output."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        c = config.in_channels
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _block(c, c)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.merge.append(_block(2 * w, w))
            c = w
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        out: torch.Tensor = self.head(x)
        return out


def _fold(block: nn.Module) -> None:
    """Convolution + batch norm (eval) → one convolution with a bias, in place."""
    layers = cast(nn.Sequential, block)
    for i in (0, 3):
        conv, norm = cast(nn.Conv2d, layers[i]), cast(nn.BatchNorm2d, layers[i + 1])
        mean, var = cast(torch.Tensor, norm.running_mean), cast(torch.Tensor, norm.running_var)
        scale = norm.weight / torch.sqrt(var + norm.eps)
        merged = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=True)
        with torch.no_grad():
            merged.weight.copy_(conv.weight * scale[:, None, None, None])
            cast(torch.Tensor, merged.bias).copy_(norm.bias - mean * scale)
        layers[i], layers[i + 1] = merged, nn.Identity()


def folded(network: UNet) -> UNet:
    """The network for inference, batch norms folded into the convolutions as the ONNX
    export does: the same function, and the same layers as the exported graph."""
    network = network.eval()
    for block in [*network.down, network.bottom, *network.merge]:
        _fold(block)
    return network


Convolution = nn.Conv2d | nn.ConvTranspose2d


def _pair(block: nn.Module) -> list[Convolution]:
    layers = cast(nn.Sequential, block)
    return [cast(nn.Conv2d, layers[0]), cast(nn.Conv2d, layers[3])]


def _convolutions(network: UNet) -> list[Convolution]:
    """Convolution layers in the order the forward pass (and so the graph) runs them."""
    layers: list[Convolution] = []
    for block in network.down:
        layers += _pair(block)
    layers += _pair(network.bottom)
    for up, merge in zip(network.up, network.merge, strict=True):
        layers += [cast(nn.ConvTranspose2d, up), *_pair(merge)]
    return [*layers, network.head]


def from_onnx(model: onnx.ModelProto) -> UNet:
    """The exported network back in torch: built from the architecture the export
    recorded, with the graph's (folded) weights. Raises ValueError when the graph is
    not this architecture."""
    props = {p.key: p.value for p in model.metadata_props}
    if ARCHITECTURE_KEY not in props:
        raise ValueError(f"no {ARCHITECTURE_KEY} in the model's metadata")
    network = folded(UNet(UNetConfig.from_json(props[ARCHITECTURE_KEY])))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    layers = _convolutions(network)
    if len(nodes) != len(layers):
        raise ValueError(f"graph has {len(nodes)} convolutions, the architecture {len(layers)}")
    with torch.no_grad():
        for node, layer in zip(nodes, layers, strict=True):
            params = [p for p in (layer.weight, layer.bias) if p is not None]
            for name, param in zip(node.input[1:], params, strict=False):
                value = torch.from_numpy(weights[name].copy())
                if value.shape != param.shape:
                    raise ValueError(
                        f"{node.name}: {name} {tuple(value.shape)} ≠ {tuple(param.shape)}"
                    )
                param.copy_(value)
    return network
