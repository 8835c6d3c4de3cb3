"""Model summary: parameter counts per part and the checkpoint load report.

python -m networks --foundation litemedsam --num_classes 1
python -m networks --foundation medsam_vit_b --checkpoint checkpoints/medsam_vit_b.pth
"""

from __future__ import annotations

import argparse
import sys

from networks import FOUNDATIONS, build_foundation, build_unet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m networks", description=__doc__.split("\n")[0])
    parser.add_argument("--foundation", default="litemedsam", choices=list(FOUNDATIONS))
    parser.add_argument("--checkpoint", default=None, help="foundation weights (.pth)")
    parser.add_argument("--num_classes", type=int, default=1, help="foreground classes C")
    parser.add_argument("--image_size", type=int, default=None, help="ViT input size S")
    parser.add_argument("--in_channels", type=int, default=1)
    parser.add_argument("--lora_rank", type=int, default=4)
    parser.add_argument("--unet_width", type=int, default=64)
    return parser.parse_args(argv)


def format_counts(rows: list[tuple[str, int, int]]) -> str:
    """A fixed-width table of (part, parameters, trainable)."""
    lines = [f"{'part':<16}{'parameters':>14}{'trainable':>14}"]
    lines += [f"{part:<16}{total:>14,}{trainable:>14,}" for part, total, trainable in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        segmenter = build_foundation(
            args.foundation,
            num_classes=args.num_classes,
            in_channels=args.in_channels,
            image_size=args.image_size,
            checkpoint=args.checkpoint,
            lora_rank=args.lora_rank,
        )
        unet = build_unet(args.in_channels, args.num_classes, args.unet_width)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = segmenter.parameter_counts()
    unet_total = sum(p.numel() for p in unet.parameters())
    rows = [(part, *counts[part]) for part in ("encoder", "lora", "mask_decoder", "prompt_encoder")]
    rows += [("foundation", *counts["total"]), ("unet", unet_total, unet_total)]
    print(
        f"{args.foundation}: {FOUNDATIONS[args.foundation].description}; "
        f"input {segmenter.input_size}x{segmenter.input_size} -> logits "
        f"{segmenter.num_classes + 1}x{segmenter.logits_size}x{segmenter.logits_size}; "
        f"U-Net width {args.unet_width}, {args.in_channels} -> {args.num_classes + 1} channels"
    )
    print(format_counts(rows))
    report = segmenter.load_report
    print(report.summary() if report is not None else "weights: random initialisation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
