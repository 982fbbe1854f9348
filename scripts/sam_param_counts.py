"""Trainable parameters of each SAM PEFT method and the ratio to full fine-tuning of the image encoder.

The models are constructed **without weights** on PyTorch's ``meta`` device (shapes only, no memory,
no download): SAM from ``segment_anything.sam_model_registry`` / the same recipe, the PEFT method
applied exactly as in training. SAM-PARSER's counts come from the rank rule on the layer shapes
(the SVD itself needs real weights; the equality of that rule with the decomposed model is tested
in ``tests/peft/test_svd_coeff.py``).

    python scripts/sam_param_counts.py [--variant vit_b] [--json docs/sam_param_counts.json]

Prints a Markdown table: PEFT parameters in the image encoder (mask decoder frozen, the
"PEFT-only" count), their ratio to full fine-tuning of the encoder, the orchestration overhead
(relation matrix + γ + quaternion) and the total when the mask decoder is trained as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from geolesf.methods.sam.build import build_sam_model
from geolesf.methods.sam.model import apply_method
from geolesf.peft.cross_block import orchestration_parameter_count
from geolesf.peft.svd_coeff import parser_trainable_count

ROWS = [
    ("full fine-tuning (encoder)", "full", {}),
    ("sam-parser, scope neck", "parser", {"scope": "neck"}),
    ("sam-parser, scope all_conv", "parser", {"scope": "all_conv"}),
    ("sam-parser, scope all_linear_and_conv", "parser", {"scope": "all_linear_and_conv"}),
    ("sam-lora (r=4, q and v)", "lora", {}),
    ("sam-cobo, LoRA host (r=4)", "cobo", {"host": "lora"}),
    ("sam-adapter (bottleneck 16)", "adapter", {}),
    ("sam-cobo, Adapter host (r=16)", "cobo", {"host": "adapter"}),
]


def count(variant: str, method: str, kwargs: dict) -> dict[str, int]:
    with torch.device("meta"):
        sam = build_sam_model(variant)
        encoder_total = sum(p.numel() for p in sam.image_encoder.parameters())
        decoder = sum(p.numel() for p in sam.mask_decoder.parameters())
        if method == "parser":
            peft = parser_trainable_count(sam.image_encoder, kwargs["scope"])
            overhead = 0
        else:
            apply_method(sam, method, train_decoder=False, **kwargs)
            peft = sum(p.numel() for p in sam.image_encoder.parameters() if p.requires_grad)
            overhead = orchestration_parameter_count(sam.image_encoder)
    return {"peft": int(peft), "encoder_total": int(encoder_total), "decoder": int(decoder),
            "orchestration": int(overhead)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    ap.add_argument("--json", default=None, help="also write the counts as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for label, method, kwargs in ROWS:
        c = count(args.variant, method, kwargs)
        c.update(method=label, ratio_to_full=c["peft"] / c["encoder_total"],
                 with_decoder=c["peft"] + c["decoder"])
        rows.append(c)
    full = rows[0]["encoder_total"]
    print(f"SAM {args.variant}: image encoder {full:,} parameters, mask decoder {rows[0]['decoder']:,} "
          f"(torch {torch.__version__}, counted on the meta device)\n")
    print("| method | trainable (encoder PEFT) | ratio to full FT | orchestration part | + mask decoder |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['peft']:,} | {r['ratio_to_full']:.2e} ({100 * r['ratio_to_full']:.4f} %) | "
              f"{r['orchestration']:,} | {r['with_decoder']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"variant": args.variant, "torch": torch.__version__, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
