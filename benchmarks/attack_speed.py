"""adrnet's PGD against torchattacks' PGD: images per second, their ratio, and strength.

Both attacks run L∞ PGD-k (Madry et al., ICLR 2018; uniform random start, sign
steps, projection onto the ε-ball and [0, 1]) on the same model (SmallCNN, the
same weights), the same input batch, the same ε, step size and k. Modes:
- ``fp32``: both in fp32 (the like-for-like row; target ratio ≥ 1.0);
- ``channels_last+bf16``: adrnet's PGD as its training and evaluation run it with
  ``train.channels_last`` and ``train.precision = "bf16"`` (bf16 autocast, losses
  in fp32), against torchattacks in its standard fp32, which has no mixed-precision
  option (target ratio ≥ 2.0 on a CPU with native bf16, e.g. AVX512-BF16 / AMX);
  torchattacks on the same autocast channels_last model is timed too, so the gain
  of precision and the gain of the attack code can be told apart.
Each configuration is timed in turns (round robin, so machine noise hits all alike)
and the median of ``--repeats`` runs is reported, with the CPU model, the thread
count and whether the CPU advertises native bf16. In the same run both attacks'
robust accuracy on ``--n`` examples is compared (a faster attack must not be a
weaker one): the difference is reported with its binomial standard error.

The model: ``--run RUN_DIR`` takes a trained adrnet run (its SmallCNN-shaped model and
its test split, e.g. an MNIST PGD-AT run); without it a SmallCNN is trained here for a
few hundred steps on synthetic class-prototype images, so that the robust accuracy is
neither 0 nor 1 at the chosen ε.

Usage: python benchmarks/attack_speed.py [--run RUN_DIR] [--batch 256] [--steps 20]
       [--repeats 7] [--n 1000] [--eps 0.3]
Writes docs/attack_speed.json and the table between the attack-speed markers of
docs/results.md (the rest of that file is left alone). Needs torchattacks 3.5.1
(pip install --no-deps torchattacks==3.5.1: its declared dependencies pull a CUDA torch).
Smoke test: --batch 8 --repeats 1 --steps 2 --n 16 --json /tmp/a.json --results /tmp/r.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from adrnet.attacks import Linf, pgd
from adrnet.attacks.pgd import default_step_size
from adrnet.eval.precision import LowPrecision  # a bf16 channels_last copy, logits in fp32

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- attack-speed:begin -->", "<!-- attack-speed:end -->"
COMMAND = "python benchmarks/attack_speed.py"


def cpu_model() -> dict:
    """CPU name, and whether it advertises native bf16 (AVX512-BF16 or AMX-BF16)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("unknown", platform.processor()):
                name = value.strip()
            if key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def synthetic(n: int, seed: int, shape=(1, 28, 28), classes: int = 10):
    """Class prototypes plus noise, in [0, 1] (a learnable stand-in for MNIST)."""
    protos = torch.rand(classes, *shape, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    return (protos[y] * 0.6 + 0.2 + 0.25 * torch.randn(n, *shape, generator=gen)).clamp(0, 1), y


def trained_smallcnn(steps: int) -> nn.Module:
    """SmallCNN trained with Adam on synthetic prototypes (seeded)."""
    from adrnet.data import DATASETS
    from adrnet.models import build_model
    info = DATASETS["mnist"]
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_shape=info.shape, mean=info.mean, std=info.std)
    x, y = synthetic(4096, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def load_subject(args):
    """(model, x, y): a trained run and its test split, or the synthetic stand-in."""
    if args.run is None:
        x, y = synthetic(max(args.n, args.batch), 2)
        return trained_smallcnn(args.train_steps), x, y
    from adrnet.eval.evaluate import load_eval_data
    from adrnet import load_model
    model, cfg = load_model(args.run, map_location="cpu")
    x, y = load_eval_data(cfg, "test", max(args.n, args.batch), None)
    return model.eval(), x, y


def attacks(model, args) -> dict:
    """name -> attack(x, y) for the timed configurations."""
    import torchattacks
    fast = LowPrecision(model).eval()
    threat = Linf(args.eps)

    def adrnet_pgd(net):
        return lambda x, y: pgd(net, x, y, threat=threat, steps=args.steps, step_size=args.step_size)

    def torchattacks_pgd(net):
        ta = torchattacks.PGD(net, eps=args.eps, alpha=args.step_size, steps=args.steps,
                              random_start=True)
        return lambda x, y: ta(x, y)

    return {"adrnet fp32": adrnet_pgd(model),
            "torchattacks fp32": torchattacks_pgd(model),
            "adrnet channels_last+bf16": adrnet_pgd(fast),
            "torchattacks channels_last+bf16": torchattacks_pgd(fast)}


def time_round_robin(fns: dict, x, y, repeats: int) -> dict:
    """Median seconds of one attack on (x, y) per configuration, timed in turns."""
    for fn in fns.values():  # warm-up (allocator, oneDNN primitives)
        fn(x, y)
    seconds = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn(x, y)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def robust_accuracies(fns: dict, model, x, y, batch: int) -> dict:
    """Accuracy under each attack on (x, y), scored by the fp32 model, seeded alike."""
    out = {}
    for name, fn in fns.items():
        torch.manual_seed(0)
        correct = 0.0
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            correct += _accuracy(model, fn(xb, yb), yb) * len(yb)
        out[name] = correct / len(y)
    return out


def compare(acc: dict, n: int) -> dict:
    """adrnet − torchattacks per mode, with the standard error of a difference of two
    accuracies on n examples (≈ √2 · binomial se; the two runs are not independent, so
    this is conservative)."""
    rows = {}
    for mode in ("fp32", "channels_last+bf16"):
        a, t = acc[f"adrnet {mode}"], acc[f"torchattacks {mode}"]
        se = math.sqrt(max(a * (1 - a) + t * (1 - t), 1e-12) / n)
        rows[mode] = {"difference": a - t, "se": se, "within_2se": abs(a - t) <= 2 * se}
    return rows


def summary(seconds: dict, batch: int) -> dict:
    ips = {name: batch / s for name, s in seconds.items()}
    baseline = ips["torchattacks fp32"]
    return {"images_per_s": ips,
            "ratio_fp32": ips["adrnet fp32"] / baseline,
            "ratio_channels_last_bf16": ips["adrnet channels_last+bf16"] / baseline,
            "ratio_same_precision_bf16": (ips["adrnet channels_last+bf16"]
                                          / ips["torchattacks channels_last+bf16"])}


def markdown(record: dict) -> str:
    """The docs/results.md section (between the markers)."""
    s, a, c = record["speed"], record["robust_accuracy"], record["comparison"]
    cpu = record["machine"]
    lines = [BEGIN, "### Attack speed: adrnet PGD vs torchattacks PGD", "",
             f"Command: `{record['command']}` ({record['created']}). "
             f"CPU: {cpu['cpu']} (native bf16: {'yes' if cpu['native_bf16'] else 'no'}), "
             f"{cpu['threads']} threads, torch {cpu['torch']}, torchattacks {record['torchattacks']}. "
             f"Model: {record['model']}; L∞ PGD-{record['steps']}, ε = {record['eps']:g}, "
             f"step {record['step_size']:g}, batch {record['batch']}, median of {record['repeats']} "
             "round-robin repeats. Robust accuracy on "
             f"{record['n']} examples, each scored by the fp32 model.", "",
             "| configuration | images/s | robust accuracy |", "|---|---:|---:|"]
    lines += [f"| {name} | {ips:.0f} | {a[name]:.3f} |" for name, ips in s["images_per_s"].items()]
    lines += ["", f"Ratio adrnet / torchattacks fp32: **{s['ratio_fp32']:.2f}** in fp32 (target ≥ 1.0), "
              f"**{s['ratio_channels_last_bf16']:.2f}** with adrnet in channels_last + bf16 "
              f"(target ≥ 2.0 on a CPU with native bf16); both attacks in channels_last + bf16: "
              f"{s['ratio_same_precision_bf16']:.2f}."]
    lines += [f"Robust accuracy adrnet − torchattacks ({mode}): {row['difference']:+.3f} "
              f"(2 se = {2 * row['se']:.3f}: {'same within noise' if row['within_2se'] else 'DIFFERENT'})."
              for mode, row in c.items()]
    if all(v in (0.0, 1.0) for v in a.values()):
        lines.append("Every robust accuracy is 0 or 1: the strength comparison says nothing here "
                     "(use a robust --run or another --eps).")
    return "\n".join(lines + [END])


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the markers of ``path`` (or append it with them)."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained adrnet run directory (default: synthetic SmallCNN)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eps", type=float, default=None,
                   help="default: 0.3 with --run (MNIST's), 0.03 on the non-robust synthetic model")
    p.add_argument("--step-size", type=float, default=None, help="default 2.5 * eps / steps")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--n", type=int, default=1000, help="examples for the robust accuracies")
    p.add_argument("--train-steps", type=int, default=300, help="synthetic model's training")
    p.add_argument("--json", default=str(ROOT / "docs" / "attack_speed.json"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--profile", action="store_true",
                   help="print where one adrnet PGD step spends its time (fp32 and bf16) and exit")
    args = p.parse_args(argv)
    args.eps = args.eps if args.eps is not None else (0.3 if args.run else 0.03)
    args.step_size = args.step_size or default_step_size(args.eps, args.steps)
    return args


def profile_step(model, x, y, args) -> None:
    """torch.profiler's operator table for one adrnet PGD step, fp32 and channels_last+bf16."""
    from torch.profiler import ProfilerActivity, profile
    for name, net in (("fp32", model), ("channels_last+bf16", LowPrecision(model).eval())):
        attack = lambda: pgd(net, x, y, threat=Linf(args.eps), steps=1, step_size=args.step_size)
        attack()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            attack()
        print(f"--- one PGD step, {name}, batch {len(y)}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv=None) -> dict:
    import torchattacks
    args = parse_args(argv)
    model, x, y = load_subject(args)
    if args.profile:
        return profile_step(model, x[:args.batch], y[:args.batch], args)
    fns = attacks(model, args)
    seconds = time_round_robin(fns, x[:args.batch], y[:args.batch], args.repeats)
    accuracy = robust_accuracies(fns, model, x[:args.n], y[:args.n], args.batch)
    record = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join([COMMAND, *(argv if argv is not None else __import__("sys").argv[1:])]),
              "machine": cpu_model(), "torchattacks": torchattacks.__version__,
              "model": f"run {args.run}" if args.run else
                       f"SmallCNN trained {args.train_steps} steps on synthetic prototypes",
              "batch": args.batch, "steps": args.steps, "eps": args.eps,
              "step_size": args.step_size, "repeats": args.repeats, "n": min(args.n, len(y)),
              "seconds": seconds, "speed": summary(seconds, args.batch),
              "clean_accuracy": _accuracy(model, x[:args.n], y[:args.n]),
              "robust_accuracy": accuracy, "comparison": compare(accuracy, min(args.n, len(y)))}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    write_section(Path(args.results), markdown(record))
    print(markdown(record))
    return record


if __name__ == "__main__":
    main()
