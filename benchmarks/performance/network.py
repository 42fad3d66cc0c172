"""``network``: FLOPs of one sampling step of each family's default 2D network (counted with
``torch.utils.flop_counter``), its time, achieved FLOP/s and the fraction of the conv peak, and
its CPU time by kind of operator."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from benchmarks.performance import peak
from benchmarks.performance.common import condition_for, model_of, seconds_per_call, synchronize


def sampling_step(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable]:
    """The family's default 2D denoise network and one sampling step on a batch of 16 at 64x64:
    a network evaluation (diffusion) or a whole sample (GAN: one pass)."""
    config, model = model_of(f"denoise_2d_{name}.yaml", device)
    condition = condition_for(config, 16, (64, 64), device)
    if name == "gan":
        return model, lambda memory_format=torch.contiguous_format: model.sample(
            condition.contiguous(memory_format=memory_format), seed=0)
    x, t = torch.randn(16, 1, 64, 64, device=device), torch.full((16,), 500, device=device)
    return model, lambda memory_format=torch.contiguous_format: model.network(
        torch.cat([x, condition], 1).contiguous(memory_format=memory_format), t)


def measure(args: argparse.Namespace, report: dict) -> dict:
    """Against the conv peak of ``report`` (this run's or an earlier one's), measured here if there is none."""
    from torch.utils.flop_counter import FlopCounterMode

    conv_peak = report.get("peak", {}).get("conv3x3_gflops") or peak.measure(args, report)["conv3x3_gflops"]
    device, results = args.device, {}
    for name in ("diffusion", "gan"):
        model, step = sampling_step(name, device)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                step()
            flops = counter.get_total_flops()
            repeat = 3 if args.quick else 10
            entry = {"gflop_per_call": flops / 1e9, "batch": 16, "size": [64, 64]}
            for label, memory_format in (("contiguous", torch.contiguous_format),
                                         ("channels_last", torch.channels_last)):
                if memory_format == torch.channels_last:
                    model.to(memory_format=memory_format)
                seconds = seconds_per_call(lambda f=memory_format, s=step: (s(f), synchronize(device)), repeat)
                entry[label] = {"seconds": seconds, "gflops": flops / seconds / 1e9,
                                "fraction_of_conv_peak": flops / seconds / 1e9 / conv_peak}
            entry["time_by_operator"] = operator_shares(step)
            model.to(memory_format=torch.contiguous_format)
        results[name] = entry
    return results


def operator_shares(step: Callable) -> dict[str, float]:
    """Fractions of one call's CPU self time by kind of operator (torch.profiler): how much of a
    step is convolution (compute-bound) and how much is memory-bound normalisation/activation."""
    from torch.profiler import ProfilerActivity, profile

    kinds = {"convolution": ("conv", "mkldnn"), "normalisation": ("norm",), "activation": ("silu", "relu", "gelu"),
             "attention/matmul": ("bmm", "softmax", "addmm", "matmul", "mm", "attention"),
             "resampling": ("upsample", "interpolate", "pool")}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals = dict.fromkeys([*kinds, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, words in kinds.items() if any(w in name for w in words)), "other")
        totals[kind] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}
