"""Function-preserving widening of a trained generator (``model.init_widen``).

A training stage may start from a generator with fewer channels per level than its config
asks for. Every convolution of the wider network keeps the trained filters on the channels
they had; the added output channels start from the wider network's own random
initialisation, and every weight that *reads* an added channel starts at zero. The wider
network therefore computes exactly what the narrower one did, and the added channels grow
into use as training moves those zero weights (the "wider" move of Net2Net, Chen et al.,
ICLR 2016, with zero instead of copied weights).

Channel layout, shared with :class:`~m2f_bench.inpainters._nets.EncoderDecoderGenerator`:
added channels are appended after the trained ones; a pixel-shuffle upsampling's
``4·C`` outputs keep ``c·4 + k`` order, so appending channels appends whole groups; a
U-Net merge reads ``[upsampled, skip]``, so its trained input channels sit at two offsets.
"""

from __future__ import annotations

import torch

from m2f_bench.errors import M2FError
from m2f_bench.inpainters._nets import EncoderDecoderGenerator


def _check(small: EncoderDecoderGenerator, big: EncoderDecoderGenerator) -> None:
    a, b = small.arch_args, big.arch_args
    if (
        a["bottleneck_blocks"] != b["bottleneck_blocks"]
        or a["unshuffle"] != b["unshuffle"]
        or len(a["widths"]) != len(b["widths"])
        or small.skips != big.skips
        or any(x > y for x, y in zip(a["widths"], b["widths"], strict=True))
    ):
        raise M2FError(
            f"model.init_widen: can only widen to as many levels, the same bottleneck and "
            f"unshuffle and at least the same widths; {a['widths']} → {b['widths']}, "
            f"bottleneck {a['bottleneck_blocks']} → {b['bottleneck_blocks']}, "
            f"unshuffle {a['unshuffle']} → {b['unshuffle']}"
        )


def _channel_maps(net: EncoderDecoderGenerator, other: EncoderDecoderGenerator) -> dict:
    """For each convolution of ``net``: where its input and output channels of ``net`` sit
    in ``other`` (``other`` at least as wide), as index lists."""
    w, v = net.arch_args["widths"], other.arch_args["widths"]
    stem = 4 * net.unshuffle**2
    head = 3 * net.unshuffle**2
    same = lambda n: list(range(n))  # noqa: E731
    maps: dict[str, tuple[list[int], list[int]]] = {}
    for k in range(len(w)):
        first_in = same(stem) if k == 0 else same(w[k - 1])
        maps[f"encoder.{k}.0"] = (first_in, same(w[k]))
        maps[f"encoder.{k}.2"] = (same(w[k]), same(w[k]))
    for b in range(net.arch_args["bottleneck_blocks"]):
        maps[f"bottleneck.{b}.conv1"] = (same(w[-1]), same(w[-1]))
        maps[f"bottleneck.{b}.conv2"] = (same(w[-1]), same(w[-1]))
    for i in range(len(w) - 1):
        maps[f"upsample.{i}.0"] = (same(w[i + 1]), same(4 * w[i]))
        merge_in = same(w[i]) + [v[i] + j for j in range(w[i])] if net.skips else same(w[i])
        maps[f"merge.{i}.0"] = (merge_in, same(w[i]))
        maps[f"merge.{i}.2"] = (same(w[i]), same(w[i]))
    maps["head.0"] = (same(w[0]), same(head))
    return maps


@torch.no_grad()
def widen_into(small: EncoderDecoderGenerator, big: EncoderDecoderGenerator) -> None:
    """Load ``small``'s weights into the wider ``big`` in place (see the module docstring).

    Raises:
        M2FError: ``big`` is not ``small`` with the same or more channels per level.
    """
    _check(small, big)
    maps = _channel_maps(small, big)
    src = small.state_dict()
    dst = big.state_dict()
    done = set()
    for prefix, (ins, outs) in maps.items():
        weight, bias = dst[f"{prefix}.weight"], dst[f"{prefix}.bias"]
        device = weight.device  # the wider network may already be on the GPU
        trained_in = torch.zeros(weight.shape[1], dtype=torch.bool, device=device)
        trained_in[ins] = True
        weight[:, ~trained_in] = 0  # nothing reads an added channel yet
        rows = torch.tensor(outs, device=device)
        columns = torch.tensor(ins, device=device)
        weight[rows[:, None], columns[None, :]] = src[f"{prefix}.weight"].to(device)
        bias[rows] = src[f"{prefix}.bias"].to(device)
        done.update({f"{prefix}.weight", f"{prefix}.bias"})
    if done != set(dst):
        raise M2FError(f"model.init_widen: no channel map for {sorted(set(dst) - done)}")
    big.load_state_dict(dst)
