"""The model card's evaluation: kNN top-1 (k = 20, 200) and linear-probe top-1 from one feature
extraction per backbone, with the untrained architecture and raw pixels measured in the same run.

    python train/evaluate.py runs/release/simclr_resnet18.fmnist --baselines
    python train/evaluate.py simclr_resnet18.fmnist --data fashion_mnist --out runs/eval --baselines
    python train/evaluate.py runs/x --limit-train 2000 --limit-test 500 --epochs 10   # a quick look

The same protocols, keys and protocol strings as train/knn.py and train/linear.py (which it
composes); it only saves the second pass over the images. This is the command a released card
names to re-measure its numbers.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from train import eval_common as ec  # noqa: E402
from train.knn import knn_args, knn_from_features  # noqa: E402
from train.linear import linear_args, linear_from_features  # noqa: E402


def card_metrics(backbone, train, test, args, prefix: str) -> dict:
    feats = ec.features(backbone, train, test, args)
    return {**knn_from_features(*feats, args, prefix),
            **linear_from_features(*feats, args, prefix, num_classes=ec.num_classes_of(train))}


def main(argv=None) -> dict:
    return ec.run_script(__doc__, card_metrics, knn_args, linear_args, argv=argv)


if __name__ == "__main__":
    main()
