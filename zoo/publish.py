"""Publishing: a trained backbone -> a Hugging Face Hub-layout folder, a table entry, a push.

The folder (`weights/<name>.<tag>/`, written atomically: temp folder, then rename):

    config.json          timm's layout: architecture (the plain timm arch), model_args,
                         num_classes 0, num_features, pretrained_cfg (only PretrainedCfg keys);
                         our facts in a top-level `zoo` block (SHA-256 of every other file,
                         pretrainer name / objective / model_args, exported network, recipe,
                         metrics, commit)
    model.safetensors    the plain timm state dict (what vanilla timm loads)
    masker.safetensors   the learned masker's state dict, when there is one
    recipe.yaml          the resolved recipe that trained it
    README.md            the model card: YAML front matter (library_name timm, licence, tags,
                         datasets, model-index; huggingface_hub's ModelCardData) and the facts
                         in prose (zoo/card_template.md, rendered by ModelCard.from_template)

Vanilla timm loads the folder with `timm.create_model("local-dir:<folder>", pretrained=True)` and,
once pushed, `timm.create_model("hf-hub:<org>/<name>", pretrained=True)`.

Example:
    >>> import zoo
    >>> from zoo.publish import publish, update_table
    >>> p = zoo.create_pretrainer("simclr_resnet18")                               # doctest: +SKIP
    >>> entry = publish(p.exported_backbone(), "weights/simclr_resnet18.fmnist", "simclr_resnet18",
    ...                 "fmnist", recipe={"data": "fashion_mnist"}, metrics={"knn_top1_k20": 80.1},
    ...                 dtype="float16")                                              # doctest: +SKIP
    >>> update_table(entry)                                                          # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

from zoo import timm_entries, weights
from zoo.registry import METHODS
from zoo.runs import atomic_write, cast_state, save_tensors

DEFAULT_HUB_ORG = "zoo-ssl"      # the intended Hub namespace; nothing has been pushed from here

# Hub dataset ids of our data names, for the card's `datasets` metadata.
HUB_DATASETS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}

# Words that mark a metric as a baseline measured beside the model, not the model's own result.
_BASELINE_WORDS = ("untrained", "raw", "pixel", "baseline", "random", "block")

PROTOCOL = ("kNN: weighted kNN (cosine similarity, temperature T = 0.1, k = 20 and k = 200) on frozen "
            "features of the train split, top-1 on the test split. Linear probe: one linear layer on "
            "frozen, unaugmented features of the train split, top-1 on the test split. Both protocols "
            "were fixed in advance, never tuned on the test set.")


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(names)}")
    return names[dtype]


def _flat(metrics: dict, prefix: str = "") -> dict:
    """Nested metrics -> {"a/b/leaf": value} (the eval scripts write flat "data/metric" keys already)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def split_metrics(metrics: dict) -> tuple[dict, dict, dict]:
    """(own results, baselines measured beside them, protocol notes) of a metrics.json.

    The `pretrain` block (steps, wall-clock) is a training fact, not a result; `commands` and
    `seeds` (the same recipe's other seeds), `equal_compute` (the control trained for this
    method's wall-clock) and `curve` (train/curve.py) are card data, tables of their own: all are
    left out.
    """
    own, baselines, notes = {}, {}, {}
    skip = ("pretrain", "commands", "seeds", "equal_compute", "curve")
    for k, v in _flat({k: v for k, v in metrics.items() if k not in skip}).items():
        if isinstance(v, str):
            notes[k] = v
        elif any(w in k.lower() for w in _BASELINE_WORDS):
            baselines[k] = v
        else:
            own[k] = v
    return own, baselines, notes


_LABELS = {"knn_top1_k20": "kNN top-1 (k=20)", "knn_top1_k200": "kNN top-1 (k=200)",
           "linear_top1": "linear probe top-1", "linear_train_top1": "linear probe train top-1",
           "finetune_top1": "fine-tune top-1", "mask_score": "mask score"}
HEADLINE = ("knn_top1_k20", "knn_top1_k200", "linear_top1", "finetune_top1", "mask_score")
# train/finetune.py's low-label protocol: "<data>/finetune_top1_<pct>pct" (scratch under "untrained/"),
# its raw-pixel logistic regression "<data>/raw_pixels/logreg_top1_<pct>pct"
LOW_LABEL = re.compile(r"^finetune_top1_(\d+(?:p\d+)?)pct$")   # 1 %: _1pct, 0.5 %: _0p5pct


def _headline_leaf(leaf: str) -> bool:
    return leaf in HEADLINE or bool(LOW_LABEL.match(leaf))


def _label_percent(leaf: str) -> float | None:
    """The label percentage of a low-label fine-tune leaf ("finetune_top1_0p5pct" -> 0.5), else None."""
    low = LOW_LABEL.match(leaf)
    return float(low.group(1).replace("p", ".")) if low else None


def _label(key: str) -> str:
    group, _, leaf = key.rpartition("/")
    pct = _label_percent(leaf)
    label = f"fine-tune top-1, {pct:g} % labels" if pct is not None else _LABELS.get(leaf, leaf)
    return f"{label}, {group.replace('/', ' ')}" if group else label


def _raw_pixels_key(group: str, leaf: str) -> str:
    """Where the raw-pixel baseline of a result is: the same leaf, or the low-label logreg."""
    raw_leaf = leaf.replace("finetune_top1_", "logreg_top1_", 1) if LOW_LABEL.match(leaf) else leaf
    return f"{group}/raw_pixels/{raw_leaf}" if group else f"raw_pixels/{raw_leaf}"


def headline(metrics: dict) -> dict[str, float]:
    """{label: value} of the model's own headline results (kNN, linear, fine-tune, mask score)."""
    own = split_metrics(metrics)[0]
    return {_label(k): v for k, v in own.items() if _headline_leaf(k.rpartition("/")[2])}


# the results a card's seed table (and its equal-compute table, and README's pairs) compare
SEED_COLUMNS = ("knn_top1_k20", "knn_top1_k200", "linear_top1")


def precision_name(mixed_precision: str | None) -> str | None:
    """Accelerate's mixed_precision as a card says it: "no" -> "fp32"."""
    return "fp32" if mixed_precision == "no" else mixed_precision


def setting_text(setting) -> str:
    """A (machine, precision) setting in words: "bf16 on Intel(R) Xeon(R) Processor, 2 cores, no GPU"."""
    return "unrecorded host and precision" if not setting else f"{setting[1]} on {setting[0]}"


def _how(row: dict) -> str:
    """How a run's pretraining ran: "41.7 min, bf16, <host>" (a part it lacks is left out)."""
    parts = [f"{row['wall_clock_s'] / 60:.1f} min" if row.get("wall_clock_s") else "-"]
    if row.get("mixed_precision"):
        parts.append(precision_name(row["mixed_precision"]))
    if row.get("machine"):
        parts.append(str(row["machine"]))
    return ", ".join(parts)


def seeds_summary(seeds: dict) -> dict:
    """The card's per-seed table: the same recipe trained with each seed, the same protocol.

    seeds: {"0": {"knn_top1_k20": .., "knn_top1_k200": .., "linear_top1": .., "wall_clock_s": ..,
    "mixed_precision": "bf16" | "no", "machine": ..}, ...}; the first seed is the released file
    (evaluated as stored, fp16), the others their fp32 runs. Seeds may have run on different hosts
    and precisions (a campaign spans sessions): each row says how its pretraining ran.
    Returns {"columns": labels, "rows": [(seed, values, how)], "stats": [(mean, sd)]}.
    """
    import statistics
    cols = [c for c in SEED_COLUMNS if any(r.get(c) is not None for r in seeds.values())]
    rows = [(seed, [row.get(c) for c in cols], _how(row)) for seed, row in seeds.items()]
    stats = []
    for c in cols:
        values = [r[c] for r in seeds.values() if r.get(c) is not None]
        stats.append((statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0))
    return {"columns": [_LABELS[c] for c in cols], "rows": rows, "stats": stats}


def equal_compute_summary(block: dict) -> dict:
    """The card's equal-compute table: each control trained for this method's wall-clock (train/
    release.py's `equal_compute`): {control: {SEED_COLUMNS' results, the run's wall_clock_s /
    mixed_precision / machine, "budget": {"epochs", "control_epochs", "method_wall_clock_s",
    "control_wall_clock_s", "setting": [machine, precision]}, "commands": [...]}}.
    Returns {"columns": labels, "rows": [(control, epochs, values, how)], "commands": [...]}."""
    rows, commands = [], []
    for control, r in block.items():
        b = r["budget"]
        exact = b["control_epochs"] * b["method_wall_clock_s"] / b["control_wall_clock_s"]
        epochs = (f"{b['epochs']} ({b['control_epochs']} x {b['method_wall_clock_s'] / 60:.1f} / "
                  f"{b['control_wall_clock_s'] / 60:.1f} min = {exact:.1f}; {setting_text(b.get('setting'))})")
        rows.append((control, epochs, [r.get(c) for c in SEED_COLUMNS], _how(r)))
        commands += r.get("commands") or []
    return {"columns": [_LABELS[c] for c in SEED_COLUMNS], "rows": rows, "commands": list(dict.fromkeys(commands))}


def curve_summary(metrics: dict, command: str | None = None) -> dict | None:
    """The card's training-curve table (train/curve.py's `curve` block): kNN of the run's backbone
    snapshots by step, with raw pixels and the untrained architecture beside it when the card's own
    kNN was measured under the same protocol. {"rows": [(step, epoch, images, k20, k200)],
    "protocol", "raw": (k20, k200) | None, "untrained": (..) | None, "command", "rerun": train/curve_rerun.py's
    comparison of a re-run's last snapshot with the file | None}; None without a curve."""
    curve = metrics.get("curve") or {}
    if not curve.get("points"):
        return None
    data = curve["data"]
    rows = [(r["step"], r.get("epoch"), r["images"], r["knn_top1_k20"], r["knn_top1_k200"])
            for r in sorted(curve["points"].values(), key=lambda r: r["step"])]

    def beside(group: str):
        same = metrics.get(f"{data}/{group}/knn_protocol") == curve["protocol"]
        values = [metrics.get(f"{data}/{group}/{leaf}") for leaf in ("knn_top1_k20", "knn_top1_k200")]
        return tuple(values) if same and None not in values else None
    return {"rows": rows, "protocol": curve["protocol"], "data": data, "rerun": curve.get("rerun"),
            "raw": beside("raw_pixels"), "untrained": beside("untrained"), "command": command}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def below_baselines(metrics: dict, data: str) -> list[str]:
    """The headline metrics (kNN k=20, linear probe, each low-label fine-tune) at or below raw
    pixels on the weight's own test set, and each low-label fine-tune at or below the same
    architecture fine-tuned from scratch on the same labels, e.g. ["kNN k=20 76.5 <= raw pixels
    85.5", "fine-tune 1 % labels 70.2 <= from scratch 71.0"]; the card's first line and the README
    row say so."""
    pairs = [(f"{data}/{leaf}", f"{data}/raw_pixels/{leaf}", label, "raw pixels")
             for leaf, label in (("knn_top1_k20", "kNN k=20"), ("linear_top1", "linear probe"))]
    low_label = [key.rpartition("/")[2] for key in metrics
                 if key.rpartition("/")[0] == data and _label_percent(key.rpartition("/")[2]) is not None]
    for leaf in sorted(low_label, key=_label_percent):                  # 1 % before 10 %
        label = f"fine-tune {_label_percent(leaf):g} % labels"
        pairs += [(f"{data}/{leaf}", _raw_pixels_key(data, leaf), label, "raw pixels"),
                  (f"{data}/{leaf}", f"{data}/untrained/{leaf}", label, "from scratch")]
    misses = []
    for key, base_key, label, base in pairs:
        value, raw = metrics.get(key), metrics.get(base_key)
        if isinstance(value, (int, float)) and isinstance(raw, (int, float)) and value <= raw:
            misses.append(f"{label} {value:.1f} <= {base} {raw:.1f}")
    return misses


CARD_TEMPLATE = Path(__file__).with_name("card_template.md")


def model_card(*, name: str, tag: str, entry, cfg: dict, num_features: int, hf_hub_id: str, exported: str,
               recipe: dict, metrics: dict, commands: dict, commit: str | None, files: dict,
               has_masker: bool, facts: dict, license: str, dtype: str) -> str:
    """The README.md model card: YAML front matter with model-index, then the facts in prose.

    huggingface_hub's ModelCardData writes the front matter; the prose is zoo/card_template.md
    (Jinja, rendered by ModelCard.from_template). This function picks and pairs the facts.
    """
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import EvalResult

    data = str(recipe.get("data", "unknown"))

    def hub_id(ds: str) -> str | None:
        return HUB_DATASETS.get(ds) or (ds[3:] if ds.startswith("hf:") else None)

    own, baselines, notes = split_metrics(metrics)
    eval_results = []
    for k, v in own.items():
        group, _, leaf = k.rpartition("/")
        if not _headline_leaf(leaf):
            continue
        ds = group.split("/")[0] if group else data          # eval scripts prefix keys with their data
        eval_results.append(EvalResult(
            task_type="image-classification", task_name="Image classification (frozen features)"
            if not leaf.startswith("finetune_top1") else "Image classification (fine-tuned)",
            dataset_type=hub_id(ds) or f"zoo/{ds}", dataset_name=ds, dataset_split="test",
            metric_type="accuracy" if "top1" in leaf else leaf, metric_value=v, metric_name=_label(k)))
    card_data = ModelCardData(
        library_name="timm", license=license, pipeline_tag="image-feature-extraction",
        tags=["image-feature-extraction", "timm", "self-supervised", "zoo", entry.method],
        datasets=[hub_id(data)] if hub_id(data) else None, model_name=f"{name}.{tag}",
        eval_results=eval_results or None)

    # one row per result; the untrained architecture and raw pixels (measured in the same run,
    # same protocol) beside it; any other baseline (random / block masks) as a row of its own
    results, used = [], set()
    for k, v in own.items():
        group, _, leaf = k.rpartition("/")
        side = {"untrained": f"{group}/untrained/{leaf}" if group else f"untrained/{leaf}",
                "raw_pixels": _raw_pixels_key(group, leaf)}
        used.update(side.values())
        results.append({"label": _label(k), "value": v, "untrained": baselines.get(side["untrained"]),
                        "raw": baselines.get(side["raw_pixels"])})
    extra_baselines = [(_label(k), v) for k, v in baselines.items() if k not in used]

    def command(key: str) -> str | None:          # the recorded command whose word is in the metric's key
        return next((cmd for word, cmd in commands.items() if word in key), None)

    commands_used = list(dict.fromkeys(c for c in map(command, [*own, *baselines]) if c))
    card = ModelCard.from_template(
        card_data, template_path=str(CARD_TEMPLATE),
        title=f"{name}.{tag}", misses=below_baselines(metrics, data), timm_arch=entry.timm_arch,
        arch=entry.arch, method=entry.method, objective=recipe.get("objective"), ours=entry.ours, data=data,
        num_features=num_features, input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]), has_masker=has_masker, hf_hub_id=hf_hub_id, protocol=PROTOCOL,
        results=results, extra_baselines=extra_baselines, commands=commands_used, notes=notes,
        seeds=seeds_summary(metrics["seeds"]) if metrics.get("seeds") else None, exported=exported,
        equal_compute=equal_compute_summary(metrics["equal_compute"]) if metrics.get("equal_compute") else None,
        curve=curve_summary(metrics, commands.get("curve")), dtype=dtype, model=recipe.get("model", name), commit=commit, facts=facts,
        pretrain=_flat(metrics.get("pretrain") or {}),
        recipe_yaml=yaml.safe_dump(_jsonable(recipe), sort_keys=False).rstrip(), files=files,
        paper_title=entry.paper_title, paper_id=entry.paper_id, license=license)
    return str(card)


def publish(backbone: nn.Module, out_dir: str | os.PathLike, name: str, tag: str, *, recipe: dict,
            metrics: dict | None = None, masker: nn.Module | None = None, commit: str | None = None,
            dtype=None, objective: str | None = None, pretrainer_args: dict | None = None,
            exported: str | None = None, hf_hub_id: str | None = None, mean=None, std=None,
            image_size: int | None = None, facts: dict | None = None, commands: dict | None = None,
            license: str = "apache-2.0") -> dict:
    """Write the Hub-layout folder of one released weight; return its table entry.

    backbone: the plain timm backbone (`pretrainer.exported_backbone()`); it must fit
        `timm.create_model(timm_arch, num_classes=0, **model_args)` of `name` exactly.
    masker: the learned masker (`pretrainer.masker`) to ship beside it, or None.
    dtype: "float16" (or a torch dtype) to store floating tensors in half precision; None keeps them.
    recipe / metrics / commit / facts (wall-clock, machine, ...) / commands (a word of the metric
        keys, e.g. "knn", -> the command that measures them): the card facts. metrics is the run's
        metrics.json: flat "data/metric" keys from the eval scripts (baselines under "untrained" /
        "raw_pixels" / "..._random"), protocol strings, and a `pretrain` block of training facts.
    mean / std / image_size default to the recipe's.
    """
    entry = METHODS.get(name)
    if entry is None:
        raise weights.UnknownModelError(name, METHODS)
    if "." in tag or "/" in tag or not tag:
        raise ValueError(f"tag {tag!r}: a tag is one word such as 'simclr_fmnist' (no dots or slashes)")
    metrics = dict(metrics or {})
    # where the run wrote and whether it resumed are facts of one machine, not of the recipe: the
    # released recipe.yaml retrains from anywhere
    recipe = {k: v for k, v in recipe.items() if k not in ("run_dir", "resume")}
    commands = dict(commands or metrics.pop("commands", {}) or {})
    dtype = _dtype(dtype)
    state = cast_state(backbone.state_dict(), dtype)
    weights.check_state_shapes({k: tuple(v.shape) for k, v in state.items()},
                               weights.expected_shapes(entry.timm_arch, entry.model_args),
                               f"the exported backbone of {name}")
    objective = objective or recipe.get("objective")
    exported = exported or entry.describe_export(objective)
    paper = " ".join(p for p in (entry.paper_title, entry.paper_id) if p) or None
    hf_hub_id = hf_hub_id or f"{DEFAULT_HUB_ORG}/{name}.{tag}"
    mean, std = mean or recipe.get("mean"), std or recipe.get("std")
    if (mean is None or std is None) and recipe.get("data"):
        from zoo.data import dataset_stats       # what training normalised with when the recipe left it None
        stats = dataset_stats(str(recipe["data"]))
        mean, std = mean or stats["mean"], std or stats["std"]
    cfg = weights.make_pretrained_cfg(
        entry.timm_arch, entry.model_args, tag=tag, mean=mean, std=std,
        image_size=image_size or recipe.get("image_size"),
        crop_pct=1.0, interpolation="bicubic", license=license,
        description=f"{entry.method} self-supervised backbone (zoo), exported: {exported}",
        paper_name=entry.paper or entry.paper_title or None, paper_ids=entry.paper_id or None)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    # model.safetensors and config.json are written here, not by timm's save_for_hf: measured on
    # the 13 released folders with timm 1.0.31, save_for_hf (1) writes the tensors without the
    # {"format": "pt"} metadata, so every model.safetensors would change (32 bytes shorter
    # header; a republish would add ~210 MB of blobs to git), and (2) records timm's
    # reconstruction args in model_args (in_chans, num_classes, global_pool, img_size as a list)
    # plus a top-level global_pool, so model_args no longer equal the registry's and the
    # table's. It also writes weights and config in one call, while the config's zoo block must
    # hash the card, which hashes the weights. Vanilla timm loads either layout.
    try:
        save_tensors(tmp / "model.safetensors", state, metadata={"format": "pt"})
        if masker is not None:
            save_tensors(tmp / "masker.safetensors", cast_state(masker.state_dict(), dtype), metadata={"format": "pt"})
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(_jsonable(recipe), sort_keys=False))
        files = {f.name: weights.sha256_file(f) for f in sorted(tmp.iterdir())}
        dtype_name = str(dtype or next((v.dtype for v in state.values() if v.is_floating_point()),
                                       torch.float32)).replace("torch.", "")
        card = model_card(name=name, tag=tag, entry=entry, cfg=cfg, num_features=backbone.num_features,
                          hf_hub_id=hf_hub_id, exported=exported, recipe=recipe, metrics=metrics,
                          commands=commands, commit=commit, files=files, has_masker=masker is not None,
                          facts=dict(facts or {}), license=license, dtype=dtype_name)
        (tmp / "README.md").write_text(card)
        files["README.md"] = weights.sha256_file(tmp / "README.md")
        pretrainer = {"model": recipe.get("model", name), "objective": objective,
                      "model_args": dict(pretrainer_args if pretrainer_args is not None
                                         else recipe.get("model_args") or {})}
        zoo_block = {"name": name, "tag": tag, "files": files, "pretrainer": pretrainer, "exported": exported,
                     "dtype": dtype_name, "metrics": metrics, "commands": commands, "recipe": recipe,
                     "commit": commit, "license": license, "paper": paper,
                     "facts": dict(facts or {})}
        config = {"architecture": entry.timm_arch, "num_classes": 0, "num_features": backbone.num_features,
                  "model_args": dict(entry.model_args), "pretrained_cfg": cfg, "zoo": zoo_block}
        (tmp / "config.json").write_text(json.dumps(_jsonable(config), indent=2) + "\n")
        files["config.json"] = weights.sha256_file(tmp / "config.json")
        for f in tmp.iterdir():          # mkdtemp and mkstemp make private files; a release is public
            f.chmod(0o644)
        tmp.chmod(0o755)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _jsonable({"name": name, "tag": tag, "timm_arch": entry.timm_arch, "model_args": entry.model_args,
                      "pretrained_cfg": cfg, "hf_hub_id": hf_hub_id, "revision": None, "files": files,
                      **{k: v for k, v in zoo_block.items() if k not in ("name", "tag", "files")}})


def republish(folder: str | os.PathLike, metrics: dict, table: str | os.PathLike | None = None) -> dict:
    """Re-render a published folder's card with `metrics` merged into its recorded ones (a
    "commands" key merges into its commands); return its table entry (also written to `table` when
    that table lists the release).

    For a release whose run directory is gone (another machine, an earlier session): everything a
    card is made of is in the folder (config.json's `zoo` block: recipe, metrics, commands, facts,
    commit), so new results (extra seeds, a later fine-tune) reach the card without retraining.
    The weights are re-saved from the folder's own files in their own dtype, a bit-exact round
    trip; a file whose hash would change is an error, and the folder is left as it was.

    Example:
        >>> republish("weights/simclr_resnet18.fmnist", {"seeds": {...}})     # doctest: +SKIP
    """
    folder = Path(folder)
    zoo_block = weights.read_folder_config(folder).get("zoo") or {}
    name, tag = zoo_block.get("name"), zoo_block.get("tag")
    if not (name and tag and zoo_block.get("files")):
        raise ValueError(f"{folder}: config.json has no zoo block with name, tag and files: not a zoo release")
    from zoo.factory import create_masker, create_model
    backbone = create_model(str(folder), pretrained=True)
    masker = create_masker(str(folder)) if "masker.safetensors" in zoo_block["files"] else None
    pretrainer = zoo_block.get("pretrainer") or {}
    metrics = dict(metrics)
    commands = {**(zoo_block.get("commands") or {}), **metrics.pop("commands", {})}
    listed = weights.load_table(table).get(f"{name}.{tag}")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.re-"))
    try:
        entry = publish(backbone, tmp / folder.name, name, tag, recipe=zoo_block.get("recipe") or {},
                        metrics={**(zoo_block.get("metrics") or {}), **metrics}, masker=masker,
                        commit=zoo_block.get("commit"), dtype=zoo_block.get("dtype"),
                        objective=pretrainer.get("objective"), pretrainer_args=pretrainer.get("model_args"),
                        exported=zoo_block.get("exported"), facts=zoo_block.get("facts"),
                        commands=commands, license=zoo_block.get("license", "apache-2.0"),
                        hf_hub_id=(listed or {}).get("hf_hub_id"))
        changed = [f for f in zoo_block["files"] if f.endswith(".safetensors")
                   and entry["files"].get(f) != zoo_block["files"][f]]
        if changed:
            raise RuntimeError(f"{folder}: re-saving {changed} would change their SHA-256 "
                               f"({[zoo_block['files'][f][:12] for f in changed]} -> "
                               f"{[entry['files'].get(f, '')[:12] for f in changed]}): left as it was")
        _swap_in(tmp / folder.name, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if listed is not None:              # a pushed release keeps its Hub commit
        entry["revision"] = listed.get("revision")
        update_table(entry, table)
    return entry


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temp folder into place; an existing folder is replaced, never half-written."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def update_table(entry: dict, path: str | os.PathLike | None = None, default: bool = False) -> Path:
    """Add or replace `entry` in the released table (atomically); default=True lists it first for its name.

    A new tag of a name goes after that name's other tags (the first tag stays the default).
    """
    path = Path(path) if path else weights.table_path()
    table = weights.load_table(path)
    key = f"{entry['name']}.{entry['tag']}"
    items = [(k, v) for k, v in table.items() if k != key]
    same = [i for i, (_, v) in enumerate(items) if v["name"] == entry["name"]]
    if key in table and not default:
        pos = list(table).index(key)
    elif default and same:
        pos = same[0]
    else:
        pos = same[-1] + 1 if same else len(items)
    items.insert(pos, (key, entry))
    atomic_write(path, json.dumps(dict(items), indent=2) + "\n")
    timm_entries.sync()   # timm's registry follows the table (a no-op when `path` is not the active table)
    return path


def push(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
         commit_message: str | None = None) -> str:
    """Upload a published folder to the Hub (whatever HF_ENDPOINT names); return the commit id.

    Example:
        >>> from zoo.publish import push
        >>> push("weights/adios_resnet18.simclr_fmnist", "my-org/adios_resnet18.simclr_fmnist")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                             commit_message=commit_message or f"Upload {folder.name} (zoo.publish)")
    return info.oid
