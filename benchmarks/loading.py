"""`zoo.create_model(name, pretrained=True)` latency, cold and warm, vs vanilla timm loading the
same file.

Three loaders of one released weight (a tiny one published into a temporary folder by
`zoo.publish.publish` when the repository has none released):
- `zoo`: `zoo.create_model(name_or_folder, pretrained=True)`: resolution, SHA-256 check, shape
  check, then timm's own loader;
- `timm`: vanilla timm, `timm.create_model("local-dir:<folder>", pretrained=True)` in a process
  that never imports the zoo (no hash check: timm has none);
- `timm+sha256`: the same plus a hashlib SHA-256 of the file, i.e. vanilla timm doing the check the
  zoo does.
"cold" is the first call in a fresh process (imports done and timed apart as `import_s`); "warm"
is the median of the next calls in that process. Each loader's fresh process runs `repeats`
times, taking turns with the others; medians are reported.

Example:
    >>> from benchmarks.loading import run
    >>> r = run(quick=True)                              # doctest: +SKIP
    >>> sorted(r["loaders"])                             # doctest: +SKIP
    ['timm', 'timm+sha256', 'zoo']
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import median

ROOT = Path(__file__).resolve().parents[1]
LOADERS = ("zoo", "timm", "timm+sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _child(loader: str, target: str, folder: str, warm: int) -> dict:
    """Runs in a fresh process: import, then one cold and `warm` warm loads."""
    t0 = time.perf_counter()
    if loader == "zoo":
        import zoo
        load = lambda: zoo.create_model(target, pretrained=True)  # noqa: E731
    else:
        import timm
        expected = json.loads(Path(folder, "config.json").read_text())["zoo"]["files"]["model.safetensors"]

        def load():
            if loader == "timm+sha256" and _sha256(Path(folder, "model.safetensors")) != expected:
                raise RuntimeError("hash mismatch")
            return timm.create_model(f"local-dir:{folder}", pretrained=True)
    import_s = time.perf_counter() - t0
    times = []
    for _ in range(1 + warm):
        t0 = time.perf_counter()
        load()
        times.append(time.perf_counter() - t0)
    if loader == "timm" and "zoo" in sys.modules:
        raise RuntimeError("the vanilla timm process imported the zoo")
    return dict(import_s=import_s, cold_s=times[0], warm_s=median(times[1:]) if warm else None)


def publish_tiny(folder: Path) -> tuple[str, Path]:
    """Publish a randomly initialised registered backbone (resnet18 if any) into `folder`."""
    import zoo  # noqa: F401
    from zoo.publish import publish
    from zoo.registry import METHODS
    names = sorted(METHODS, key=lambda n: (METHODS[n].arch != "resnet18", METHODS[n].method != "simclr", n))
    name = names[0]
    entry = METHODS[name]
    import timm
    net = timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)
    out = folder / f"{name}.bench"
    publish(net, out, name, "bench", recipe={"data": "fashion_mnist", "image_size": 32},
            metrics={}, objective=entry.default_objective)
    return name, out


def pick_release() -> tuple[str, Path] | None:
    """The first released weight in the repository (name.tag, its folder), if any."""
    import zoo
    from zoo import weights
    for name_tag in zoo.list_pretrained():
        folder = (weights.weights_root() or Path("/nonexistent")) / name_tag
        if (folder / "model.safetensors").is_file():
            return name_tag, folder
    return None


def run(quick: bool = False) -> dict:
    repeats, warm = (1, 2) if quick else (3, 5)
    with tempfile.TemporaryDirectory() as tmp:
        release = pick_release()
        if release:
            target, folder = release
            source = f"released weight {target}"
        else:
            name, folder = publish_tiny(Path(tmp))
            target = str(folder)
            source = f"{name} (random init) published to a temporary folder; no weight released yet"
        size_mb = (folder / "model.safetensors").stat().st_size / 2**20
        raw: dict[str, list[dict]] = {k: [] for k in LOADERS}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   HF_HUB_OFFLINE="1")
        for _ in range(repeats):
            for loader in LOADERS:
                out = subprocess.run([sys.executable, "-m", "benchmarks.loading", "--child", loader,
                                      "--target", target, "--folder", str(folder), "--warm", str(warm)],
                                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
                if out.returncode:
                    raise RuntimeError(f"loader {loader} failed:\n{out.stderr[-2000:]}")
                raw[loader].append(json.loads(out.stdout.strip().splitlines()[-1]))
    loaders = {k: {f: median([r[f] for r in v]) for f in ("import_s", "cold_s", "warm_s")}
               for k, v in raw.items()}
    return dict(source=source, target=target if release else "<temporary folder>", file_mb=size_mb,
                repeats=repeats, warm_calls=warm, loaders=loaders,
                cold_ratio=loaders["zoo"]["cold_s"] / loaders["timm"]["cold_s"],
                warm_ratio=loaders["zoo"]["warm_s"] / loaders["timm"]["warm_s"],
                warm_ratio_vs_sha=loaders["zoo"]["warm_s"] / loaders["timm+sha256"]["warm_s"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=LOADERS, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--warm", type=int, default=3)
    a = ap.parse_args()
    from benchmarks.common import set_threads
    set_threads(2)
    print(json.dumps(_child(a.child, a.target, a.folder, a.warm)))
