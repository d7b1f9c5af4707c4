"""Weighted kNN top-1 of a frozen backbone (the fixed protocol of zoo.evaluation: cosine, T = 0.1,
k = 20 and 200, the whole train split as memory bank, unaugmented images), written to metrics.json.

    python train/knn.py runs/adios_resnet18                          # data / size from the recipe
    python train/knn.py simclr_resnet18 --data fashion_mnist --out runs/eval --baselines
    python train/knn.py raw-pixels --data scenes                     # the raw-pixel baseline only
    python train/knn.py runs/x --limit-train 2000 --limit-test 500   # a quick look

--baselines also measures, in the same run, the same architecture untrained and raw pixels.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from zoo.evaluation import knn_classify  # noqa: E402
from train import eval_common as ec  # noqa: E402


def knn_metrics(backbone, train, test, args, prefix: str) -> dict:
    return knn_from_features(*ec.features(backbone, train, test, args), args, prefix)


def knn_from_features(train_f, train_y, test_f, test_y, args, prefix: str) -> dict:
    result = knn_classify(train_f.to(ec.device_of(args)), train_y, test_f, test_y, k=args.k, T=args.T)
    out = {f"{prefix}/{key}": value for key, value in result.items()}
    out[f"{prefix}/knn_protocol"] = (f"weighted kNN, cosine, T={args.T}, k={list(args.k)}, "
                                     f"train={len(train_y)}, test={len(test_y)}, "
                                     f"image_size={args.image_size}, unaugmented")
    return out


def knn_args(p) -> None:
    p.add_argument("--k", type=int, nargs="+", default=[20, 200])
    p.add_argument("--T", type=float, default=0.1)


def main(argv=None) -> dict:
    return ec.run_script(__doc__, knn_metrics, knn_args, argv=argv)


if __name__ == "__main__":
    main()
