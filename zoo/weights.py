"""Released weights: the table, `resolve` (the one load path) and the checks every file passes.

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

`resolve(source, file)` is the one load path: `zoo.create_model`, `zoo.create_masker` and the
timm entrypoints of `zoo.timm_entries` all call it. A source is
- a zoo name, `{method}_{arch}` (its default tag) or `{method}_{arch}.{tag}`: the table's entry;
  the file comes from `weights/<name>.<tag>/` when the repository is at hand (an editable install,
  a clone, a torch.hub checkout: the folder beside the `zoo` package), else from the entry's Hub
  repo through huggingface_hub's cache;
- a published folder, `local-dir:PATH` or a path: its config.json (timm's layout) and the hashes
  its `zoo` block records;
- a Hub repo, `hf-hub:ORG/NAME[@REVISION]`: downloaded into the cache, then read as a folder, and
  checked against the table too when the table names that repo.
Whatever the source, the file is then checked: a `.safetensors` file must be whole (safetensors'
own reader validates its header against the file), its full SHA-256 must equal the record, and a
backbone's tensors must fit its architecture (same keys, same shapes). Files are read with
safetensors only, never with pickle.

Every failure is a `ZooWeightsError` subclass with a message that says what to do.

Example:
    >>> from zoo import weights
    >>> weights.list_released("adios*")                 # doctest: +SKIP
    ['adios_resnet18.simclr_fmnist']
    >>> r = weights.resolve("adios_resnet18.simclr_fmnist", pretrained=True)   # doctest: +SKIP
    >>> r.file, r.timm_arch                                                    # doctest: +SKIP
    (PosixPath('.../weights/adios_resnet18.simclr_fmnist/model.safetensors'), 'resnet18')
    >>> model = r.create_model(num_classes=10)                                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import json
import os
import struct
import warnings
from pathlib import Path

import torch
from torch import nn

from zoo.registry import METHODS
from zoo.suggest import close_matches, did_you_mean

TABLE_FILE = Path(__file__).with_name("released.json")
TABLE_ENV = "ZOO_RELEASED"          # path of another table (tests, private releases)
WEIGHTS_ENV = "ZOO_WEIGHTS_DIR"     # folder that holds <name>.<tag>/ folders, instead of <repo>/weights
MODEL_FILE = "model.safetensors"    # the backbone's file in a release (timm's name for it)

# PretrainedCfg keys that point at a weight source: never stored in the table's cfg (the zoo
# resolves and checks files itself) and never inherited from a timm arch's own cfg, so a missing
# file cannot silently fall back to timm's supervised weights.
SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")

_LOCAL = "local-dir:"
_HUB = ("hf-hub:", "hf_hub:")


# ---------------------------------------------------------------------------------------------
# Errors: one base class, one subclass per failure.

class ZooWeightsError(Exception):
    """Base class of every weight error of the zoo."""


class UnknownModelError(ZooWeightsError, ValueError):
    """A name (or name.tag) that is not registered; `.suggestions` holds the close matches among `choices`."""

    def __init__(self, name: str, choices, what: str = "model"):
        choices = list(choices)
        self.name, self.suggestions = name, close_matches(name, choices)
        super().__init__(f"Unknown {what} {name!r}.{did_you_mean(name, choices)} "
                         "See zoo.list_models() and zoo.list_pretrained().")


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


# ---------------------------------------------------------------------------------------------
# resolve: the one load path.

@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a source resolves to: the timm backbone to build, its cfg and the checked file."""

    source: str
    timm_arch: str
    model_args: dict
    pretrained_cfg: dict      # timm's cfg (data config); its `file` is the checked backbone file, if loaded
    num_classes: int          # the head it was published with (0: headless, every zoo release)
    file: Path | None         # the checked file asked for (None: pretrained=False)
    pretrainer: dict | None   # {"model", "objective", "model_args"} of the release: what create_masker builds

    def create_model(self, **kwargs) -> nn.Module:
        """`timm.create_model` of the backbone, loading the checked file if one was resolved.

        kwargs are timm's (`num_classes=N` for a fresh head, `features_only=True`, `in_chans`, ...).
        """
        import timm
        args = {"num_classes": self.num_classes, **self.model_args, **kwargs}
        return timm.create_model(self.timm_arch, pretrained="file" in self.pretrained_cfg,
                                 pretrained_cfg=dict(self.pretrained_cfg), **args)


def _is_folder(source: str) -> bool:
    return (source.startswith(_LOCAL) or "/" in source or os.sep in source
            or (Path(source) / "config.json").is_file())


def resolve(source: str, file: str = MODEL_FILE, *, pretrained: bool | None = None,
            cache_dir: str | os.PathLike | None = None, cfg_overlay: dict | None = None) -> Resolved:
    """Resolve a zoo name, a published folder or a Hub repo; fetch and check `file` if pretrained.

    source: `"{method}_{arch}"` (default tag), `"{method}_{arch}.{tag}"`, `"local-dir:PATH"` or a
        path, `"hf-hub:ORG/NAME[@REVISION]"`.
    file: the release's file to resolve: `model.safetensors` (the backbone; its shapes are checked
        against the architecture and it becomes the cfg's `file`) or e.g. `masker.safetensors`.
    pretrained: fetch and check the file. Default: False for names (timm's rule), True for a folder
        or a Hub repo (the point of naming one).
    cfg_overlay: keys of timm's pretrained cfg to override (timm's `pretrained_cfg_overlay`); no
        weight source.
    """
    if source.startswith(_HUB):
        resolved = _from_hub(source.split(":", 1)[1], file, pretrained is not False, cache_dir)
    elif _is_folder(source):
        folder = source[len(_LOCAL):] if source.startswith(_LOCAL) else source
        resolved = _from_folder(source, Path(folder), file, pretrained is not False)
    else:
        resolved = _from_table(source, file, bool(pretrained), cache_dir)
    if cfg_overlay:
        sources = [k for k in cfg_overlay if k in SOURCE_KEYS]
        if sources:
            raise ValueError(f"{source}: pretrained_cfg_overlay may not set a weight source ({sources}); the zoo "
                             "resolves and checks its own files.")
        resolved.pretrained_cfg.update(cfg_for_timm(cfg_overlay))
    return resolved


def resolve_file(name_tag: str, filename: str = MODEL_FILE, *,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of one released file, checked: `resolve(name_tag, filename, pretrained=True).file`."""
    return resolve(name_tag, filename, pretrained=True, cache_dir=cache_dir).file


def _from_table(source: str, file: str, pretrained: bool, cache_dir) -> Resolved:
    table = load_table()
    name, _, tag = source.partition(".")
    if name not in METHODS:
        raise UnknownModelError(name, list(METHODS) + list(table))
    entry = METHODS[name]
    release = None
    if pretrained or tag:
        try:
            release = find_release(name, tag or None, table)
        except NoReleasedWeightsError:
            if pretrained:
                raise
            raise UnknownModelError(source, [k for k, e in table.items() if e["name"] == name] or table) from None
    elif released_tags(name, table):      # untrained, but with the default tag's data config (timm's rule)
        release = find_release(name, None, table)
    if release is None:
        cfg, facts, path = make_pretrained_cfg(entry.timm_arch, entry.model_args), {"model": name}, None
    else:
        key, rel = release
        cfg, facts = cfg_for_timm(rel["pretrained_cfg"]), rel.get("pretrainer") or {"model": name}
        path = _release_file(key, rel, file, table, cache_dir) if pretrained else None
    if path is not None and file == MODEL_FILE:
        check_shapes(path, entry.timm_arch, entry.model_args)
        cfg["file"] = str(path)
    return Resolved(source, entry.timm_arch, dict(entry.model_args), cfg, 0, path, facts)


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


def _release_file(key: str, release: dict, file: str, table: dict, cache_dir) -> Path:
    """weights/<name>.<tag>/<file> if the repository is at hand, else the Hub cache; checked."""
    files = release.get("files", {})
    if file not in files:
        raise NoReleasedWeightsError(key, [k for k, e in table.items() if file in e.get("files", {})],
                                     detail=f" in a file {file!r}")
    root = weights_root()
    local = root / key / file if root else None
    path = local if local is not None and local.is_file() else _hub_download(key, release, file, local, cache_dir)
    return verify_file(path, files[file])


def read_folder_config(folder: str | os.PathLike) -> dict:
    """config.json of a published folder (timm's layout plus the `zoo` block)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a published model folder: it has no config.json "
                                "(a Hub repo is named 'hf-hub:ORG/NAME').")
    return json.loads(path.read_text())


def _from_folder(source: str, folder: Path, file: str, pretrained: bool, expected: str | None = None) -> Resolved:
    config = read_folder_config(folder)
    arch, model_args = config["architecture"], dict(config.get("model_args") or {})
    cfg = cfg_for_timm(config.get("pretrained_cfg") or {})
    saved_head = model_args.pop("num_classes", None)     # timm's save_for_hf keeps it among the model_args
    num_classes = config.get("num_classes", cfg.get("num_classes", 0) if saved_head is None else saved_head)
    cfg["num_classes"] = num_classes
    facts = config.get("zoo") or {}
    path = None
    if pretrained:
        path = folder / file
        if not path.is_file():
            raise NoReleasedWeightsError(str(folder), [], detail=f" (no {file} in the folder)")
        recorded = facts.get("files", {}).get(file)
        if recorded is None and expected is None:
            warnings.warn(f"{folder}/config.json records no SHA-256 for {file} (no `zoo` block): loading "
                          "it unchecked.", stacklevel=4)    # points at the caller of create_model
            safetensors_header(path)
        for sha in {recorded, expected} - {None}:
            verify_file(path, sha)
        if file == MODEL_FILE:
            check_shapes(path, arch, model_args, num_classes)
            cfg["file"] = str(path)
    return Resolved(source, arch, model_args, cfg, num_classes, path, facts.get("pretrainer"))


def _from_hub(repo: str, file: str, pretrained: bool, cache_dir) -> Resolved:
    """Download config.json (+ file) of a Hub repo into the cache; check it as a folder, and against the
    table's hash when the table names that repo (at that revision)."""
    repo_id, _, revision = repo.partition("@")
    where = {"hf_hub_id": repo_id, "revision": revision or None}
    for filename in ["config.json", *([file] if pretrained else [])]:
        folder = _hub_download(repo, where, filename, None, cache_dir).parent
    # the table's hash holds for the repo at any revision when the table pins none, else at the one it
    # pins (the snapshot folder is named by its commit): pinning a revision never turns the check off
    known = next((e for e in load_table().values() if e.get("hf_hub_id") == repo_id
                  and e.get("revision") in (None, revision, folder.name)), {})
    return _from_folder(f"hf-hub:{repo}", folder, file, pretrained, known.get("files", {}).get(file))


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
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """{key: {"dtype", "shape"}} of a safetensors file, read by safetensors' own reader.

    `safe_open` checks that the file is whole (the header's byte ranges cover the file exactly, each
    range fits its tensor's shape and dtype); its complaint names neither the file nor the numbers,
    so a failure is re-said as a CorruptWeightsError that does.
    """
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: {"dtype": s.get_dtype(), "shape": s.get_shape()}
                    for k, s in ((k, f.get_slice(k)) for k in f.keys())}
    except SafetensorError as e:
        raise CorruptWeightsError(path, _corrupt_reason(path, str(e))) from None


# Bytes per element by safetensors dtype name, for the message only (safetensors did the check).
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _corrupt_reason(path: str | os.PathLike, error: str) -> str:
    """Why safetensors refused `path`, with the sizes: read from the raw header only after it refused."""
    size = os.path.getsize(path)
    if size < 8:
        return f"truncated: {size} bytes, too short for a safetensors header"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8 or "header too large" in error:
            return f"not a safetensors file or truncated (header of {n} bytes in a {size}-byte file)"
        try:
            header = json.loads(f.read(n))
            tensors = [(k, t["dtype"], [int(d) for d in t["shape"]], tuple(int(o) for o in t["data_offsets"]))
                       for k, t in header.items() if k != "__metadata__"]
            if any(len(offsets) != 2 for *_, offsets in tensors):
                return f"malformed header entry: data_offsets must be [start, stop] ({error})"
        except (ValueError, TypeError, KeyError, AttributeError):
            return f"unreadable safetensors header ({error})"
    for key, dtype, shape, (start, stop) in tensors:
        numel = 1
        for d in shape:
            numel *= d
        if dtype in _DTYPE_BYTES and stop - start != numel * _DTYPE_BYTES[dtype]:
            return f"tensor {key!r} has {stop - start} bytes for shape {shape} ({dtype})"
    need = 8 + n + max((stop for *_, (_, stop) in tensors), default=0)
    if size < need:
        return f"truncated: {size} bytes, the header needs {need}"
    if size > need:
        return f"{size - need} trailing bytes after the last tensor"
    return f"rejected by safetensors ({error})"


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
def _expected_shapes(timm_arch: str, model_args_json: str, num_classes: int) -> dict[str, tuple]:
    import timm
    with torch.device("meta"):     # no memory, no init cost: only the shapes are needed
        model = timm.create_model(timm_arch, pretrained=False, num_classes=num_classes,
                                  **json.loads(model_args_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(timm_arch: str, model_args: dict, num_classes: int = 0) -> dict[str, tuple]:
    """{key: shape} of `timm.create_model(timm_arch, num_classes=num_classes, **model_args)` (0: headless)."""
    return dict(_expected_shapes(timm_arch, json.dumps(model_args, sort_keys=True), num_classes))


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple]:
    """{key: shape} of a safetensors file (its header only)."""
    return {k: tuple(v["shape"]) for k, v in safetensors_header(path).items()}


def check_shapes(path: str | os.PathLike, timm_arch: str, model_args: dict, num_classes: int = 0) -> None:
    """Every tensor of the file fits the backbone exactly (same keys, same shapes)."""
    check_state_shapes(tensor_shapes(path), expected_shapes(timm_arch, model_args, num_classes), str(path))


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
