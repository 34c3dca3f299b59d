"""The same network and training step in PyTorch, for bench/peers.py (run by a Python that has torch; never imported
by the project).

It builds the pre-activation ResNet from a plan.json (what our model builds from it: stem convolution with
BN+ReLU, pre-activation blocks with the plan's shortcuts, the side head after the plan's side block, BN+ReLU,
global average pooling and a linear head), with BatchNorm momentum 0.1 (ours: 0.9 on the average) and ε 1e-5, and
trains it as our training step does: cross-entropy + side weight × side cross-entropy + weight decay on the
kernels, SGD with momentum 0.9. Channels-last memory format, the CPU's fast path.

Protocol (stdin/stdout, one line each): it prints `ready <json>` once built and warmed up; `steps K` runs K steps
and answers `time <seconds>`; `quit` or the end of stdin ends it.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class BNReLU(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(x))


def conv(cin, cout, k, stride=1):
    c = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)
    nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
    return c


class Block(nn.Module):
    def __init__(self, b):
        super().__init__()
        self.b = b
        cin, mid, cout, s = b["in_channels"], b["mid_channels"], b["out_channels"], b["stride"]
        self.preact = BNReLU(cin) if b["preact"] != "none" else None
        self.residual = None
        if b["residual"]:
            if b["kind"] == "basic":
                self.residual = nn.Sequential(conv(cin, mid, 3, s), BNReLU(mid), conv(mid, cout, 3))
            else:
                self.residual = nn.Sequential(conv(cin, mid, 1), BNReLU(mid), conv(mid, mid, 3, s), BNReLU(mid),
                                              conv(mid, cout, 1))
        self.shortcut_conv = conv(cin, cout, 1, s) if b["shortcut"] == "conv" else None

    def forward(self, x):
        b = self.b
        pre = self.preact(x) if self.preact is not None else x
        shortcut_in = pre if b["preact"] == "both" else x
        if b["shortcut"] == "pool_pad":
            sc = F.avg_pool2d(shortcut_in, 2)
            extra = b["out_channels"] - b["in_channels"]
            sc = F.pad(sc, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        elif self.shortcut_conv is not None:
            sc = self.shortcut_conv(shortcut_in)
        else:
            sc = shortcut_in
        if self.residual is None:
            return sc
        return sc + self.residual(pre)


class Head(nn.Module):
    def __init__(self, channels, classes):
        super().__init__()
        self.bnrelu = BNReLU(channels)
        self.linear = nn.Linear(channels, classes)

    def forward(self, x):
        return self.linear(self.bnrelu(x).mean((2, 3)))


class PreActResNet(nn.Module):
    def __init__(self, plan, side: bool):
        super().__init__()
        if plan["style"] != "cifar":
            raise SystemExit("torch_peer builds CIFAR-style plans only")
        blocks = plan["blocks"]
        self.stem = nn.Sequential(conv(3, plan["stem_channels"], 3), BNReLU(plan["stem_channels"]))
        self.blocks = nn.ModuleList(Block(b) for b in blocks)
        self.names = [b["name"] for b in blocks]
        side_at = plan["side_block"] if side else None
        self.side_index = self.names.index(side_at) if side_at else None
        self.side = Head(blocks[self.side_index]["out_channels"], plan["num_classes"]) if side_at else None
        self.head = Head(blocks[-1]["out_channels"], plan["num_classes"])

    def forward(self, x):
        x = self.stem(x)
        side = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.side_index:
                side = self.side(x)
        return self.head(x), side


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", required=True, help="plan.json of the network")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--side-weight", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.plan) as f:
        plan = json.load(f)
    model = PreActResNet(plan, side=args.side_weight > 0).to(memory_format=torch.channels_last)
    kernels = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    others = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() >= 2)]
    opt = torch.optim.SGD([{"params": kernels, "weight_decay": args.weight_decay},
                           {"params": others, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    size = plan["image_size"]
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
    mean = torch.rand(1, 3, size, size) * 255
    labels = torch.randint(0, plan["num_classes"], (args.batch,))

    def step():
        x = ((images.float() - mean) / 128).contiguous(memory_format=torch.channels_last)
        logits, side = model(x)
        loss = F.cross_entropy(logits, labels)
        if side is not None:
            loss = loss + args.side_weight * F.cross_entropy(side, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if args.compile:
        step = torch.compile(step)
    model.train()
    for _ in range(3):  # compile and warm up
        step()
    params = sum(p.numel() for p in model.parameters())
    print("ready " + json.dumps({"params": params, "threads": torch.get_num_threads(), "torch": torch.__version__}),
          flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        start = time.perf_counter()
        for _ in range(int(words[1])):
            step()
        print("time %.6f" % (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
