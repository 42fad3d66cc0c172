"""``peak``: the machine's measured limits, a 3x3 convolution (channels_last) and a square matmul, fp32."""

from __future__ import annotations

import argparse

import torch

from benchmarks.performance.common import seconds_per_call, synchronize


def measure(args: argparse.Namespace, report: dict) -> dict:
    device, repeat = args.device, 3 if args.quick else 10
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 128, 128, device=device).to(memory_format=torch.channels_last)
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    with torch.no_grad():
        t_conv = seconds_per_call(lambda: (conv(x), synchronize(device)), repeat)
        t_mm = seconds_per_call(lambda: (a @ b, synchronize(device)), repeat)
    conv_flops = 2 * 8 * 64 * 64 * 9 * 128 * 128
    return {"conv3x3_gflops": conv_flops / t_conv / 1e9, "matmul_gflops": 2 * 2048**3 / t_mm / 1e9,
            "threads": torch.get_num_threads()}
