"""Linear-probe top-1 of a frozen backbone on unaugmented features (the fixed protocol of
zoo.evaluation.linear_probe: standardised features, SGD momentum 0.9, lr 0.1 cosine, batch 256,
no weight decay, 100 epochs, final model), written to metrics.json.

    python train/linear.py runs/adios_resnet18
    python train/linear.py simclr_resnet18 --data fashion_mnist --out runs/eval --baselines
    python train/linear.py raw-pixels --data scenes
    python train/linear.py runs/x --limit-train 2000 --limit-test 500 --epochs 10   # a quick look

--baselines also probes, in the same run, the same architecture untrained and raw pixels.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from zoo.evaluation import linear_probe  # noqa: E402
from train import eval_common as ec  # noqa: E402


def linear_metrics(backbone, train, test, args, prefix: str) -> dict:
    return linear_from_features(*ec.features(backbone, train, test, args), args, prefix,
                                num_classes=ec.num_classes_of(train))


def linear_from_features(train_f, train_y, test_f, test_y, args, prefix: str, num_classes=None) -> dict:
    result = linear_probe(train_f, train_y, test_f, test_y, epochs=args.epochs, device=ec.device_of(args),
                          num_classes=num_classes)
    out = {f"{prefix}/{key}": value for key, value in result.items()}
    out[f"{prefix}/linear_protocol"] = (f"frozen unaugmented features, standardised, SGD m0.9 lr0.1 "
                                        f"cosine bs256 wd0, {args.epochs} epochs, "
                                        f"train={len(train_y)}, test={len(test_y)}, "
                                        f"image_size={args.image_size}")
    return out


def linear_args(p) -> None:
    p.add_argument("--epochs", type=int, default=100, help="linear-probe epochs")


def main(argv=None) -> dict:
    return ec.run_script(__doc__, linear_metrics, linear_args, argv=argv)


if __name__ == "__main__":
    main()
