"""The main job: train ADIOS on the embedded scenes, measure it, publish it, load it back.

    python train/demo.py                     # a few minutes on 2 CPU cores, no download
    python train/demo.py --out runs/demo2 epochs=2     # recipe overrides after the options

1. Pretrain `adios_resnet18` (SimCLR base, N = 3 masks) on the embedded synthetic scenes with
   recipes/demo.adios_resnet18.simclr_scenes.yaml, through train/pretrain.py's `main` (the same
   loop `accelerate launch` runs).
2. kNN top-1 on held-out scenes (zoo.evaluation: weighted kNN, cosine, T = 0.1, k = 20 and 200,
   unaugmented 32 px images) and the linear probe (zoo.evaluation.linear_probe, its fixed
   protocol) on the same features, for the trained backbone, the same architecture untrained (same
   seed as training's initialisation) and raw pixels, in the same run; and every released scenes
   weight loaded by `zoo.create_model(name, pretrained=True)`, on the same scenes, to show what a
   longer run than a few minutes buys; and every released Fashion-MNIST weight whose card beats
   the trivial baselines, measured here on a Fashion-MNIST subset beside the same architecture
   untrained and raw pixels (when Fashion-MNIST is installed: it is not embedded).
3. Mask score on held-out scenes (best IoU per ground-truth object over the K masks binarised at
   0.5) of the learned occluder, against random and block masks of the same K and area.
4. The mask picture: held-out scenes | the N learned masks | the masked views (masks.png), and
   the same scenes under random masks of the same area (masks_random.png).
5. Publish the backbone and the occluder to a local Hub-layout folder (zoo.publish), recorded in
   a private weight table beside it (ZOO_RELEASED / ZOO_WEIGHTS_DIR point there: the repository's
   own table is not touched), then load it back with `zoo.create_model("local-dir:...")` and
   `torch.hub.load(repo, "adios_resnet18", tag="demo_scenes", source="local")`, and check both give
   the trained backbone's outputs.
6. Print a table of what it did; everything is also in OUT/demo.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                       # run from a clone without installing

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from train import pretrain  # noqa: E402
from train.mask_grid import save_mask_grid  # noqa: E402
from zoo import weights  # noqa: E402
from zoo.data import DATASETS, DataMissingError, FashionMNIST, SceneDataset, eval_transform  # noqa: E402
from zoo.publish import below_baselines  # noqa: E402
from zoo.evaluation import (extract_features, knn_classify, linear_probe, mask_protocol,  # noqa: E402
                            random_masks_like, score_masker)

RECIPE = REPO / "recipes" / "demo.adios_resnet18.simclr_scenes.yaml"
NAME, TAG = "adios_resnet18", "demo_scenes"


def scenes_tensors(split: str, n: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n scenes of a split as normalised, unaugmented tensors (rendered once, shared by all evaluations)."""
    stats = DATASETS["scenes"]
    ds = SceneDataset(split, image_size, length=n, transform=eval_transform(image_size, stats["mean"], stats["std"]))
    xs, ys = zip(*(ds[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys)


def measure(backbone, train, test) -> dict:
    """kNN top-1 (k = 20, 200) and linear-probe top-1 of frozen features, one feature pass."""
    data = [list(zip(*t)) for t in (train, test)]
    (train_f, train_y), (test_f, test_y) = (extract_features(backbone, d, batch_size=256) for d in data)
    linear = linear_probe(train_f, train_y, test_f, test_y)
    return {**knn_classify(train_f, train_y, test_f, test_y, k=(20, 200), T=0.1),
            "linear_top1": linear["linear_top1"]}


def released_rows(results: dict) -> list[tuple[str, str]]:
    """One row per released scenes weight measured in this run (longer runs than the demo's)."""
    raw, raw_linear = results["scenes/raw_pixels/knn_top1_k20"], results["scenes/raw_pixels/linear_top1"]
    rows = []
    for key, v in results.items():
        if key.startswith("scenes/released/") and key.endswith("/knn_top1_k20"):
            name = key.split("/")[2]
            linear = results[f"scenes/released/{name}/linear_top1"]
            verdict = ("above" if v > raw else "not above", "above" if linear > raw_linear else "not above")
            rows.append((f"released {name}", f"kNN k=20 {v:.1f} % ({verdict[0]} raw pixels), linear {linear:.1f} % "
                                             f"({verdict[1]}): zoo.create_model(\"{name}\", pretrained=True)"))
    return rows


def released_beyond_baselines(data: str = "fashion_mnist") -> list[str]:
    """Released weights of `data` whose cards are above every trivial baseline (raw pixels in kNN
    k=20 and the linear probe, raw pixels and from-scratch in each low-label fine-tune)."""
    return [key for key, e in weights.load_table().items() if (e.get("recipe") or {}).get("data") == data
            and f"{data}/knn_top1_k20" in e.get("metrics", {}) and not below_baselines(e["metrics"], data)]


def fmnist_rows(n_train: int, n_test: int, root=None) -> tuple[dict, list[tuple[str, str]]]:
    """Every released Fashion-MNIST weight that beats the trivial baselines on its card, loaded by
    zoo.create_model(name, pretrained=True) and measured here beside the same architecture
    untrained and raw pixels on the first n_train / n_test images of Fashion-MNIST's splits, at the
    weight's own size and normalisation: the value of a longer run than the demo's few minutes,
    shown in the same run. Fashion-MNIST is not embedded: without its files, one row says how to
    get them."""
    keys = released_beyond_baselines()
    if not keys:
        return {}, [("released, Fashion-MNIST", "none above the trivial baselines yet (weights/, README table)")]
    results, rows, raw = {}, [], {}
    for key in keys:
        cfg = weights.load_table()[key]["pretrained_cfg"]
        size, mean, std = cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"])
        try:
            data = [FashionMNIST(split, root, size, eval_transform(size, mean, std), source="local")
                    for split in ("train", "test")]
        except DataMissingError:
            return {}, [("released, Fashion-MNIST", "not measured: Fashion-MNIST is not installed "
                         "(`apt-get install -y dataset-fashion-mnist`); the weights that beat raw pixels "
                         f"are trained on it: {', '.join(keys)}")]
        train, test = ((torch.stack([d[i][0] for i in range(min(n, len(d)))]), torch.as_tensor(d.labels[:n]))
                       for d, n in zip(data, (n_train, n_test)))
        torch.manual_seed(0)                             # the untrained architecture's initialisation
        measured = {"": zoo.create_model(key, pretrained=True), "untrained/": zoo.create_model(key, pretrained=False)}
        for who, backbone in measured.items():
            results.update({f"fashion_mnist/released/{key}/{who}{k}": v
                            for k, v in measure(backbone, train, test).items()})
        if (size, mean, std) not in raw:                 # raw pixels once per size and normalisation
            raw[(size, mean, std)] = measure(torch.nn.Flatten(), train, test)
        results.update({f"fashion_mnist/released/{key}/raw_pixels/{k}": v for k, v in raw[(size, mean, std)].items()})
        r = {k.rpartition(f"{key}/")[2]: v for k, v in results.items() if k.startswith(f"fashion_mnist/released/{key}/")}
        rows.append((f"released {key}", f"on Fashion-MNIST ({len(train[1])} train / {len(test[1])} test images, {size} px): "
                     f"kNN k=20 {r['knn_top1_k20']:.1f} % (untrained {r['untrained/knn_top1_k20']:.1f}, raw pixels "
                     f"{r['raw_pixels/knn_top1_k20']:.1f}), linear {r['linear_top1']:.1f} % (untrained "
                     f"{r['untrained/linear_top1']:.1f}, raw pixels {r['raw_pixels/linear_top1']:.1f})"))
    results["fashion_mnist/released_protocol"] = (f"the demo's kNN and linear probe on the first {n_train} train "
                                                  f"and {n_test} test images, each weight's size, unaugmented")
    return results, rows


def max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="output folder (replaced if it holds an earlier demo)")
    p.add_argument("--knn-train", type=int, default=2000, help="train scenes in the kNN memory bank")
    p.add_argument("--knn-test", type=int, default=1000, help="held-out test scenes for kNN")
    p.add_argument("--mask-images", type=int, default=500, help="held-out scenes for the mask score")
    p.add_argument("--fmnist-train", type=int, default=10000,
                   help="Fashion-MNIST train images in the memory bank / probe set for the released weights")
    p.add_argument("--fmnist-test", type=int, default=2000, help="Fashion-MNIST test images for the released weights")
    p.add_argument("--fmnist-root", help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. epochs=2")
    args = p.parse_args(argv)
    out: Path = args.out.resolve()
    if out.exists():                                   # only ever delete a folder this script made
        if not (out / ".zoo-demo").exists() and any(out.iterdir()):
            p.error(f"{out} exists and is not an earlier demo's folder: pick another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".zoo-demo").write_text("made by train/demo.py; deleted by its next run\n")
    t0 = time.perf_counter()

    # 1. pretrain -------------------------------------------------------------------------------
    run_dir = out / "run"
    pretrainer = pretrain.main(["--recipe", str(RECIPE), f"run_dir={run_dir}", *args.overrides])
    # fp32, contiguous, eval: exactly what a user gets back from the published folder
    pretrainer = pretrainer.float().cpu().to(memory_format=torch.contiguous_format).eval()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recipe = __import__("yaml").safe_load((run_dir / "recipe.yaml").read_text())
    facts = metrics["pretrain"]
    t_train = time.perf_counter() - t0
    size = recipe["image_size"]

    # 2. kNN: trained vs the same architecture untrained vs raw pixels --------------------------
    train, test = scenes_tensors("train", args.knn_train, size), scenes_tensors("test", args.knn_test, size)
    backbone = pretrainer.exported_backbone()
    torch.manual_seed(recipe["seed"])                      # the initial weights training started from
    untrained = zoo.create_pretrainer(recipe["model"], recipe["objective"], **recipe["model_args"]).exported_backbone()
    results = {"scenes/" + k: v for k, v in measure(backbone, train, test).items()}
    results.update({"scenes/untrained/" + k: v for k, v in measure(untrained, train, test).items()})
    results.update({"scenes/raw_pixels/" + k: v for k, v in measure(torch.nn.Flatten(), train, test).items()})
    # the released scenes weights, loaded as a user would, on the same scenes: what a longer run buys
    for release in zoo.list_pretrained("*scenes*"):
        released = zoo.create_model(release, pretrained=True)
        results.update({f"scenes/released/{release}/{k}": v for k, v in measure(released, train, test).items()})
    fmnist, fmnist_printed = fmnist_rows(args.fmnist_train, args.fmnist_test, args.fmnist_root)
    results.update(fmnist)
    results["scenes/knn_protocol"] = (f"weighted kNN, cosine, T=0.1, k=[20, 200], train={args.knn_train} "
                                      f"scenes, test={args.knn_test} held-out scenes, {size} px, unaugmented")
    results["scenes/linear_protocol"] = f"zoo.evaluation.linear_probe defaults on the kNN's features and scenes"

    # 3. mask score against random / block masks of the same K and area ---------------------------
    score = score_masker(pretrainer.masker, image_size=size, n=args.mask_images, seed=0)
    results.update({f"scenes/{k}": v for k, v in score.items()})
    results["scenes/mask_protocol"] = mask_protocol(args.mask_images, size, seed=0)

    # 4. the mask pictures -----------------------------------------------------------------------
    stats = DATASETS["scenes"]
    x = test[0][:8]
    with torch.no_grad():
        learned = pretrainer.masker(x)
    random = random_masks_like(learned, (size, size), generator=torch.Generator().manual_seed(0))
    save_mask_grid(out / "masks.png", x, learned, stats["mean"], stats["std"])
    save_mask_grid(out / "masks_random.png", x, random.float(), stats["mean"], stats["std"])

    # 5. publish, then load back through zoo.create_model and torch.hub -------------------------
    from zoo.publish import publish, update_table
    weights_dir, table = out / "weights", out / "released.json"
    metrics.update(results)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    folder = weights_dir / f"{NAME}.{TAG}"
    entry = publish(backbone, folder, NAME, TAG, recipe=recipe, metrics=metrics, masker=pretrainer.masker,
                    facts={"wall_clock_s": facts["wall_clock_s"], "machine": f"{os.cpu_count()} CPU cores"},
                    commands={"knn": "python train/demo.py", "linear": "python train/demo.py",
                              "mask": "python train/demo.py"})
    update_table(entry, table)
    probe = test[0][:16]
    from_folder = zoo.create_model(f"local-dir:{folder}")
    saved_env = {k: os.environ.get(k) for k in ("ZOO_RELEASED", "ZOO_WEIGHTS_DIR")}
    os.environ.update(ZOO_RELEASED=str(table), ZOO_WEIGHTS_DIR=str(weights_dir))
    try:
        from_hub = torch.hub.load(str(REPO), NAME, tag=TAG, pretrained=True, source="local", trust_repo=True)
    finally:
        for k, v in saved_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    loads = {"create_model": max_diff(backbone, from_folder, probe), "torch_hub": max_diff(backbone, from_hub, probe)}

    # 6. the table -------------------------------------------------------------------------------
    summary = {"recipe": str(RECIPE.relative_to(REPO)), "run_dir": str(run_dir), "pretrain": facts,
               "results": results, "published": str(folder), "files": entry["files"],
               "load_max_abs_diff": loads, "wall_clock_s": round(time.perf_counter() - t0, 1),
               "commands": {   # the project's own commands for each step (full splits by default)
                   "pretrain": f"python train/pretrain.py --recipe {RECIPE.relative_to(REPO)} run_dir={run_dir}",
                   "knn": f"python train/knn.py {run_dir} --baselines --limit-train {args.knn_train} "
                          f"--limit-test {args.knn_test}",
                   "linear": f"python train/linear.py {run_dir} --baselines --limit-train {args.knn_train} "
                             f"--limit-test {args.knn_test}",
                   "mask": f"python train/maskscore.py {run_dir} --n {args.mask_images}",
                   "publish": f"python train/publish.py {run_dir} --tag {TAG} --out {folder} --table {table}"}}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    r = results
    rows = [
        ("pretrain", f"{recipe['model']} ({recipe['objective']}, N={recipe['model_args']['num_masks']}) on "
                     f"{recipe['limit_train']} scenes x {recipe['epochs']} epochs: {facts['steps']} steps "
                     f"in {facts['wall_clock_s']:.0f} s ({facts['images'] / max(facts['wall_clock_s'], 1e-9):.0f} img/s)"),
        ("kNN top-1 k=20", f"trained {r['scenes/knn_top1_k20']:.1f} %   untrained {r['scenes/untrained/knn_top1_k20']:.1f} %"
                           f"   raw pixels {r['scenes/raw_pixels/knn_top1_k20']:.1f} %"),
        ("kNN top-1 k=200", f"trained {r['scenes/knn_top1_k200']:.1f} %   untrained {r['scenes/untrained/knn_top1_k200']:.1f} %"
                            f"   raw pixels {r['scenes/raw_pixels/knn_top1_k200']:.1f} %"),
        ("linear probe top-1", f"trained {r['scenes/linear_top1']:.1f} %   untrained {r['scenes/untrained/linear_top1']:.1f} %"
                               f"   raw pixels {r['scenes/raw_pixels/linear_top1']:.1f} %"),
        ("trained - untrained", f"{r['scenes/knn_top1_k20'] - r['scenes/untrained/knn_top1_k20']:+.1f} points at k=20, "
                                f"{r['scenes/knn_top1_k200'] - r['scenes/untrained/knn_top1_k200']:+.1f} at k=200, "
                                f"{r['scenes/linear_top1'] - r['scenes/untrained/linear_top1']:+.1f} linear; vs raw pixels "
                                f"{r['scenes/knn_top1_k20'] - r['scenes/raw_pixels/knn_top1_k20']:+.1f} at k=20, "
                                f"{r['scenes/linear_top1'] - r['scenes/raw_pixels/linear_top1']:+.1f} linear"),
        *released_rows(r),
        *fmnist_printed,
        ("mask score (IoU)", f"learned {r['scenes/mask_score']:.3f}   random {r['scenes/mask_score_random']:.3f}"
                             f"   block {r['scenes/mask_score_block']:.3f}   (K={r['scenes/mask_k']}, "
                             f"area {r['scenes/mask_area']:.2f})"),
        ("mask cover", f"learned {r['scenes/mask_cover']:.3f}   random {r['scenes/mask_cover_random']:.3f}"
                       f"   block {r['scenes/mask_cover_block']:.3f}   (share of a scene's objects hidden by one slot)"),
        ("mask pictures", f"{out / 'masks.png'} (learned), {out / 'masks_random.png'} (random)"),
        ("published", f"{folder} ({', '.join(entry['files'])})"),
        ("zoo.create_model", f"\"local-dir:{folder.name}\": max |diff| vs trained {loads['create_model']:.1e}"),
        ("torch.hub.load", f"(repo, \"{NAME}\", tag=\"{TAG}\", source=\"local\"): max |diff| {loads['torch_hub']:.1e}"),
        ("wall-clock", f"{summary['wall_clock_s']:.0f} s in all ({t_train:.0f} s to the trained model)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    print("\nre-run a step alone:\n" + "\n".join(f"  {c}" for c in summary["commands"].values()))
    if max(loads.values()) > 1e-5:
        raise SystemExit("the published weights do not reproduce the trained backbone")
    return summary


if __name__ == "__main__":
    main()
