"""Released weights: the table, where a file comes from, and the checks every file passes.

The table is `zoo/released.json`, one entry per released `"{name}.{tag}"`, in release order (the
first tag listed for a name is its default, timm's rule):

    "adios_resnet18.simclr_fmnist": {
      "name": "adios_resnet18", "tag": "simclr_fmnist",
      "timm_arch": "resnet18", "model_args": {},          # the plain timm backbone
      "pretrained_cfg": {...},      # a timm PretrainedCfg: only keys timm knows, no weight source
      "hf_hub_id": "ORG/adios_resnet18.simclr_fmnist",
      "revision": null,             # the Hub commit, once pushed
      "files": {"model.safetensors": "<full sha256>", "config.json": "...", ...},
      "pretrainer": {"model": ..., "objective": ..., "model_args": {...}},   # for create_masker
      "exported": "...", "metrics": {...}, "recipe": {...}, "commit": "...",
      "license": "apache-2.0", "paper": "..."
    }

Resolution of a file: `weights/<name>.<tag>/<file>` when the repository is at hand (an editable
install, a clone, a torch.hub checkout: the folder beside the `zoo` package), else the Hub repo of
the entry through huggingface_hub's cache. Whatever the source, the file is then checked: a
`.safetensors` file must be structurally whole (its header's byte ranges fit the file), and its
full SHA-256 must equal the table's. Files are read with safetensors only, never with pickle.

Every failure is a `ZooWeightsError` subclass with a message that says what to do.

Example:
    >>> from zoo import weights
    >>> weights.list_released("adios*")                 # doctest: +SKIP
    ['adios_resnet18.simclr_fmnist']
    >>> path = weights.resolve_file("adios_resnet18.simclr_fmnist", "model.safetensors")  # doctest: +SKIP
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import json
import os
import struct
from pathlib import Path

import torch

TABLE_FILE = Path(__file__).with_name("released.json")
TABLE_ENV = "ZOO_RELEASED"          # path of another table (tests, private releases)
WEIGHTS_ENV = "ZOO_WEIGHTS_DIR"     # folder that holds <name>.<tag>/ folders, instead of <repo>/weights

# PretrainedCfg keys that point at a weight source: never stored in the table's cfg (the zoo
# resolves and checks files itself) and never inherited from a timm arch's own cfg, so a missing
# file cannot silently fall back to timm's supervised weights.
SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")


# ---------------------------------------------------------------------------------------------
# Errors: one base class, one subclass per failure.

class ZooWeightsError(Exception):
    """Base class of every weight error of the zoo."""


class UnknownModelError(ZooWeightsError, ValueError):
    """A name (or name.tag) that is not registered; `.suggestions` holds close matches."""

    def __init__(self, name: str, suggestions: list[str], what: str = "model"):
        self.name, self.suggestions = name, suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"Unknown {what} {name!r}.{hint} See zoo.list_models() and zoo.list_pretrained().")


class NoReleasedWeightsError(ZooWeightsError, ValueError):
    """pretrained=True for a name (or tag, or file) that has no released weights."""

    def __init__(self, name: str, released: list[str], detail: str = ""):
        self.name, self.released = name, released
        have = ", ".join(released) if released else "none yet"
        super().__init__(f"{name!r} has no released weights{detail}. Released: {have}. "
                         "Use pretrained=False for a randomly initialised backbone.")


class HashMismatchError(ZooWeightsError):
    """A file whose SHA-256 differs from the table's (or the published folder's) record."""

    def __init__(self, file: str | os.PathLike, expected: str, actual: str):
        self.file, self.expected, self.actual = str(file), expected, actual
        super().__init__(f"SHA-256 mismatch for {self.file}: expected {expected}, got {actual}. "
                         "The file is corrupt or not the released one: delete it (for a Hub download, "
                         "its entry in the Hugging Face cache) and resolve it again.")


class CorruptWeightsError(ZooWeightsError):
    """A weight file that is truncated or not a valid safetensors file."""

    def __init__(self, file: str | os.PathLike, reason: str):
        self.file, self.reason = str(file), reason
        super().__init__(f"Corrupt weight file {self.file}: {reason}. Delete it and resolve it again "
                         "(an interrupted copy or download leaves such files).")


class WeightsNotCachedError(ZooWeightsError, OSError):
    """The file is neither in the repository nor in the Hugging Face cache, and the Hub is out of reach."""


class ShapeMismatchError(ZooWeightsError, ValueError):
    """A weight file whose tensors do not fit the architecture it is registered for."""

    def __init__(self, file: str, key: str, expected, got, more: int = 0):
        self.file, self.key, self.expected, self.got = file, key, expected, got
        fmt = lambda s: "absent" if s is None else str(tuple(s))    # noqa: E731
        tail = f" (and {more} more)" if more else ""
        super().__init__(f"Shape mismatch in {file}: {key!r} expected {fmt(expected)}, got {fmt(got)}{tail}. "
                         "The weights were made for a different architecture or model_args.")


# ---------------------------------------------------------------------------------------------
# The table.

def table_path() -> Path:
    return Path(os.environ.get(TABLE_ENV) or TABLE_FILE)


def load_table(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """The released-weight table, `{"name.tag": entry}` in release order ({} if absent)."""
    path = Path(path) if path else table_path()
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def list_released(pattern: str = "*", table: dict | None = None) -> list[str]:
    """Released "name.tag" entries matching an fnmatch pattern (on the name or on name.tag)."""
    table = load_table() if table is None else table
    return sorted(k for k, e in table.items()
                  if fnmatch.fnmatch(k, pattern) or fnmatch.fnmatch(e["name"], pattern))


def released_tags(name: str, table: dict | None = None) -> list[str]:
    """Tags released for `name`, default (first listed) first."""
    table = load_table() if table is None else table
    return [e["tag"] for e in table.values() if e["name"] == name]


def find_release(name: str, tag: str | None = None, table: dict | None = None) -> tuple[str, dict]:
    """("name.tag", entry) of a release; tag None means the default tag.

    Raises NoReleasedWeightsError naming what is released.
    """
    table = load_table() if table is None else table
    tags = released_tags(name, table)
    if tag is None:
        if not tags:
            raise NoReleasedWeightsError(name, list_released(table=table))
        tag = tags[0]
    key = f"{name}.{tag}"
    if key not in table:
        released = [f"{name}.{t}" for t in tags] or list_released(table=table)
        raise NoReleasedWeightsError(key, released)
    return key, table[key]


def suggest(name: str, candidates) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)


# ---------------------------------------------------------------------------------------------
# Where a file comes from.

def repo_root() -> Path | None:
    """The repository that holds this package (editable install, clone, torch.hub checkout)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "weights").is_dir() else None


def weights_root() -> Path | None:
    """The folder of released `<name>.<tag>/` folders: $ZOO_WEIGHTS_DIR, else <repo>/weights."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    root = repo_root()
    return root / "weights" if root else None


def resolve_file(name_tag: str, filename: str, *, table: dict | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of one released file, checked (structure and SHA-256) against the table.

    Looks in `weights/<name>.<tag>/` first, then downloads through huggingface_hub's cache.
    """
    table = load_table() if table is None else table
    if name_tag not in table:
        raise UnknownModelError(name_tag, suggest(name_tag, table), what="release")
    entry = table[name_tag]
    files = entry.get("files", {})
    if filename not in files:
        raise NoReleasedWeightsError(name_tag, sorted(files), detail=f" in a file {filename!r}")
    root = weights_root()
    local = root / name_tag / filename if root else None
    if local is not None and local.is_file():
        path = local
    else:
        path = _hub_download(name_tag, entry, filename, local, cache_dir)
    return verify_file(path, files[filename])


def _hub_download(name_tag: str, entry: dict, filename: str, local: Path | None,
                  cache_dir) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo_id = entry.get("hf_hub_id")
    where = f"{local.parent}/" if local is not None else "weights/ (no repository at hand)"
    if not repo_id:
        raise WeightsNotCachedError(f"{name_tag}: {filename} is not in {where} and the table names no "
                                    "Hub repo for it. Clone the repository, which carries weights/.")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=entry.get("revision"),
                                    cache_dir=cache_dir, library_name="zoo"))
    except LocalEntryNotFoundError as e:
        why = ("offline mode is on (HF_HUB_OFFLINE=1)" if constants.is_offline_mode()
               else f"the Hub at {constants.ENDPOINT} could not be reached")
        raise WeightsNotCachedError(
            f"{name_tag}: {filename} is not in {where} nor in the Hugging Face cache, and {why}. "
            f"To get it: on a machine with network access set HF_HUB_OFFLINE=0 (or unset it) and retry, "
            f"which downloads {repo_id} into the cache once (or run `hf download {repo_id}`); or clone "
            "the zoo repository and install it with `pip install -e .`, so that weights/ is at hand.") from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise WeightsNotCachedError(
            f"{name_tag}: {filename} is not in {where}, and the Hub repo {repo_id} (revision "
            f"{entry.get('revision') or 'main'}) does not have it: it may not have been pushed yet. "
            "Clone the zoo repository, whose weights/ folder carries the released files.") from e
    except HfHubHTTPError as e:
        raise WeightsNotCachedError(f"{name_tag}: downloading {filename} from {repo_id} failed ({e}).") from e


# ---------------------------------------------------------------------------------------------
# Checks.

def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """The tensor table of a safetensors file, after checking that the file is whole.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
    shape and byte range, then the data: a truncated file ends before the last range does.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptWeightsError(path, f"truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            raise CorruptWeightsError(path, f"not a safetensors file or truncated (header of {n} bytes "
                                      f"in a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptWeightsError(path, f"unreadable safetensors header ({e})") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for key, t in tensors.items():
        try:
            start, stop = t["data_offsets"]
            numel = 1
            for d in t["shape"]:
                numel *= d
            width = _DTYPE_BYTES[t["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CorruptWeightsError(path, f"malformed header entry for {key!r}") from None
        if stop - start != numel * width:
            raise CorruptWeightsError(path, f"tensor {key!r} has {stop - start} bytes for shape {t['shape']}")
        end = max(end, stop)
    if size < 8 + n + end:
        raise CorruptWeightsError(path, f"truncated: {size} bytes, the header needs {8 + n + end}")
    if size > 8 + n + end:
        raise CorruptWeightsError(path, f"{size - 8 - n - end} trailing bytes after the last tensor")
    return tensors


def verify_file(path: str | os.PathLike, expected_sha256: str) -> Path:
    """Check a resolved file (structure for safetensors, then the full SHA-256); return its path."""
    path = Path(path)
    if path.suffix == ".safetensors":
        safetensors_header(path)
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise HashMismatchError(path, expected_sha256, actual)
    return path


@functools.lru_cache(maxsize=64)
def _expected_shapes(timm_arch: str, model_args_json: str) -> dict[str, tuple]:
    import timm
    with torch.device("meta"):     # no memory, no init cost: only the shapes are needed
        model = timm.create_model(timm_arch, pretrained=False, num_classes=0, **json.loads(model_args_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(timm_arch: str, model_args: dict) -> dict[str, tuple]:
    """{key: shape} of the headless `timm.create_model(timm_arch, num_classes=0, **model_args)`."""
    return dict(_expected_shapes(timm_arch, json.dumps(model_args, sort_keys=True)))


def check_shapes(path: str | os.PathLike, timm_arch: str, model_args: dict) -> None:
    """Every tensor of the file fits the headless backbone exactly (same keys, same shapes)."""
    got = {k: tuple(v["shape"]) for k, v in safetensors_header(path).items()}
    check_state_shapes(got, expected_shapes(timm_arch, model_args), str(path))


def check_state_shapes(got: dict[str, tuple], expected: dict[str, tuple], what: str) -> None:
    bad = [k for k in list(expected) + [k for k in got if k not in expected]
           if got.get(k) != expected.get(k)]
    if bad:
        k = bad[0]
        raise ShapeMismatchError(what, k, expected.get(k), got.get(k), more=len(bad) - 1)


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a (checked) safetensors file; never pickle."""
    from safetensors.torch import load_file
    return load_file(str(path), device="cpu")


# ---------------------------------------------------------------------------------------------
# timm's pretrained cfg of a zoo backbone.

# Data-dependent keys kept from the timm arch's own cfg; everything else (its source, its tag,
# its test-time sizes, its paper and licence) describes timm's supervised weights, not ours.
_KEEP = ("input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
         "pool_size", "first_conv", "classifier")


def make_pretrained_cfg(timm_arch: str, model_args: dict | None = None, *, tag: str | None = None,
                        mean=None, std=None, image_size: int | None = None, in_chans: int = 3,
                        crop_pct: float | None = None, interpolation: str | None = None,
                        license: str = "apache-2.0", description: str | None = None,
                        paper_name: str | None = None, paper_ids: str | None = None,
                        origin_url: str | None = None, notes=None) -> dict:
    """A complete timm pretrained cfg (only PretrainedCfg keys, no weight source) for a backbone.

    Starts from timm's cfg of `timm_arch` (for `classifier` and `first_conv`, which fine-tuning
    with a new head needs), drops its source and provenance, and sets the data config of our recipe.
    """
    from timm.models import get_pretrained_cfg
    from timm.models._pretrained import PretrainedCfg

    model_args = model_args or {}
    base = get_pretrained_cfg(timm_arch)
    base = base.to_dict(remove_source=True) if base is not None else {}
    cfg = {k: base[k] for k in _KEEP if k in base}
    size = image_size or model_args.get("img_size")
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(cfg.get("input_size", (3, 224, 224))[1:]) != size:
            cfg["pool_size"] = None        # timm's rule: the final map size no longer holds
        cfg["input_size"] = (in_chans, *size)
    elif in_chans != 3:
        cfg["input_size"] = (in_chans, *cfg.get("input_size", (3, 224, 224))[1:])
    updates = dict(architecture=timm_arch, tag=tag, custom_load=False, num_classes=0, mean=mean, std=std,
                   crop_pct=crop_pct, interpolation=interpolation, license=license,
                   description=description, paper_name=paper_name, paper_ids=paper_ids,
                   origin_url=origin_url, notes=notes)
    cfg.update({k: v for k, v in updates.items() if v is not None})
    for k in ("mean", "std", "input_size", "pool_size", "notes"):
        if isinstance(cfg.get(k), list):
            cfg[k] = tuple(cfg[k])
    PretrainedCfg(**cfg)     # fails here, not at load time, on a key timm does not know
    return cfg


def cfg_for_timm(cfg: dict) -> dict:
    """A table cfg (JSON lists) as timm expects it (tuples), without any weight source."""
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k not in SOURCE_KEYS}
    out.setdefault("custom_load", False)
    return out
