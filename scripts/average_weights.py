#!/usr/bin/env python3
"""Average the weights of models fine-tuned from one start ("model soup", Wortsman et al. 2022):

    python scripts/average_weights.py --model models/gender_vgg16_float16.npz \
        --model runs/v4/best.keras --out runs/soup/v2_v4.keras

Each ``--model`` is a checkpoint of ours (``.keras``) or a float16 snapshot (``.npz``); all must
share the architecture (the training-only feature head is dropped). ``--weights`` gives each its
share (default: equal). The result is a ``.keras`` checkpoint for ``face-gender-train export``.
Averaging only makes sense for models that share a start (one loss basin): here every candidate
was fine-tuned from the shipped model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.cli import report_user_error, setup_logging
from realtime.errors import UserError
from realtime.files import Output, check_outputs

log = logging.getLogger("average_weights")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append", required=True, help=".keras or .npz (two or more)")
    p.add_argument("--weights", help="comma-separated shares, one per --model (default equal)")
    p.add_argument("--out", type=Path, required=True, help="the averaged .keras checkpoint")
    p.add_argument("--force", action="store_true", help="replace --out")
    args = p.parse_args(argv)
    setup_logging(False)
    try:
        if len(args.model) < 2:
            raise UserError("give two or more --model")
        shares = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(args.model)
        if len(shares) != len(args.model) or min(shares) < 0 or sum(shares) <= 0:
            raise UserError("--weights needs one non-negative share per --model, not all zero")
        if args.out.suffix != ".keras":
            raise UserError(f"--out must end in .keras, got {args.out}")
        check_outputs([Output("--out", args.out)], args.model)
        if args.out.exists() and not args.force:
            raise UserError(f"{args.out} exists: pass --force to replace it")
        from training.model import (
            build_model,
            has_age_head,
            save_checkpoint,
            weight_layers,
            weights_have_age_head,
            without_training_heads,
        )

        first = args.model[0]
        models = [without_training_heads(build_model(str(path), age_head=weights_have_age_head(path)))
                  for path in args.model]
        if len({has_age_head(m) for m in models}) > 1:
            raise UserError("the models differ: some have an age head, some do not")
        total = sum(shares)
        target = models[0]
        layers = [weight_layers(m) for m in models]
        for name, layer in layers[0].items():
            if any(name not in other for other in layers[1:]):
                raise UserError(f"{first} has layer {name}, another model lacks it")
            arrays = [other[name].get_weights() for other in layers]
            layer.set_weights([sum(s / total * a[i] for s, a in zip(shares, arrays, strict=True))
                               for i in range(len(arrays[0]))])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(target, args.out)
        log.info("wrote %s: %s", args.out, ", ".join(f"{s / total:.2f} x {m}" for s, m in zip(shares, args.model,
                                                                                                strict=True)))
    except UserError as exc:
        return report_user_error(exc, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
