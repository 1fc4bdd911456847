"""siri.ops.group_advantages vs the torch eager composition (view / mean / std) used by
verl and TRL. Reports median times, the median ratio, and the fraction of the memory-copy
bandwidth measured in the same run; the bytes counted are the op's compulsory traffic: the
float32 rewards read once and the float32 advantages written once (8 bytes per element)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import group_advantages  # noqa: E402


def torch_eager(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).view(-1)


def main() -> None:
    args = common.parser(__doc__).parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    bandwidth = common.copy_bandwidth(device)
    print(f"device {device}; memory-copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    rows = []
    # 128 prompts x G=8 is one SIRI step; the large size shows the bandwidth-bound regime.
    for batch, group_size in [(128 * 8, 8), (512 * 16, 16), (1 << 22, 8)]:
        rewards = torch.randn(batch, device=device)
        times = common.compare({
            "siri": lambda rewards=rewards, group_size=group_size: group_advantages(rewards, group_size),
            "torch": lambda rewards=rewards, group_size=group_size: torch_eager(rewards, group_size),
        }, device, repeats=args.repeats)
        siri_s = common.median(times["siri"])
        bytes_moved = 2 * batch * 4  # read rewards + write advantages
        row = dict(batch=batch, group_size=group_size, siri_us=siri_s * 1e6,
                   torch_us=common.median(times["torch"]) * 1e6,
                   speedup=common.median_ratio(times["torch"], times["siri"]),
                   bandwidth_fraction=common.bandwidth_fraction(bytes_moved, siri_s, bandwidth))
        rows.append(row)
        print(f"B={batch:>8} G={group_size:>2}  siri {row['siri_us']:9.1f} us   torch "
              f"{row['torch_us']:9.1f} us   speedup x{row['speedup']:.2f}   "
              f"{100 * row['bandwidth_fraction']:.1f}% of copy bandwidth")
    common.write_results(args.out, "group_advantages", dict(
        device=str(device), copy_bandwidth_GBps=bandwidth / 1e9, rows=rows))


if __name__ == "__main__":
    main()
