"""Run the benchmark suite: print a table, write JSON.

    python -m benchmarks.run --out benchmarks/results.json                 # everything but quality
    python -m benchmarks.run --only quality --merge --out benchmarks/results.json   # + quality (long)
    python -m benchmarks.run --quick --out /tmp/bench.json                 # smoke run, small sizes
    python -m benchmarks.run --quick --only peak,pretrainers --cases simclr_resnet18 --out /tmp/b.json

Sections: peak (matmul GFLOP/s), pretrainers (every registered pretrainer at CPU scale; one
fresh process per case for clean peak memory), versus (ours vs lightly), masking (batched K-mask
forward vs loop; ADIOS / ADIOS-s / ExtreMA cost ratios), loading (create_model latency),
diagnostics (attention kernels, ResNet fwd/bwd split in fp32 vs bf16), quality (kNN after equal
minutes; only when named, it is long), to_pixels (CPU-minutes of SimCLR until kNN beats raw pixels,
ours vs lightly, on the release recipe; only when named, hours: one side per call with --merge). `--merge` keeps the other sections of an
existing JSON file, so sections can be re-run one at a time (pretrainer and versus cases merge
case by case); every run appends its command, machine line and load averages to `runs`, and
every section (and every pretrainer / versus case) names the run that produced it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("peak", "pretrainers", "versus", "masking", "loading", "diagnostics", "quality", "to_pixels")
DEFAULT = ("peak", "pretrainers", "versus", "masking", "loading", "diagnostics")
SCHEMA = 1


def run_pretrainers(cases, quick: bool, batch: int, precisions, threads: int, peak: dict | None,
                    inproc: bool = False, log=print) -> dict:
    from benchmarks import pretrainers
    cases = cases or pretrainers.all_cases()
    args = (["--batch", "8", "--warmup", "1", "--repeats", "2", "--max-seconds", "5"] if quick
            else ["--batch", str(batch), "--warmup", "2", "--repeats", "5", "--max-seconds", "30"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = {}
    for case in cases:
        for precision in precisions:
            argv = ["--case", case, "--precision", precision, "--threads", str(threads), *args]
            t0 = time.perf_counter()
            if inproc:
                import contextlib
                import io
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    pretrainers.main(argv)
                r = json.loads(buf.getvalue().strip().splitlines()[-1])
            else:
                p = subprocess.run([sys.executable, "-m", "benchmarks.pretrainers", *argv], cwd=ROOT,
                                   env=env, capture_output=True, text=True, timeout=1800)
                lines = p.stdout.strip().splitlines()
                try:
                    r = json.loads(lines[-1])
                except (IndexError, json.JSONDecodeError):
                    r = dict(case=case, precision=precision, error=f"exit {p.returncode}: {p.stderr[-1500:]}")
            if peak and "achieved_gflops" in r:
                r["mfu"] = r["achieved_gflops"] / peak[precision]["gflops"]
            key = f"{case} {precision}"
            out[key] = r
            status = (f"{r['images_per_s']:.1f} img/s, step {r['step_s']:.3f}s, MFU {r.get('mfu', 0):.1%}"
                      if "step_s" in r else f"ERROR {r.get('error', '')[:200]}")
            log(f"  {key}: {status} ({time.perf_counter() - t0:.0f}s)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="zoo benchmark suite (BENCHMARKS.md)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: seconds per section (smoke test)")
    ap.add_argument("--only", default=None, help=f"comma list of sections from {SECTIONS}")
    ap.add_argument("--merge", action="store_true", help="keep the other sections of an existing --out")
    ap.add_argument("--cases", default=None, help="pretrainer cases name[:objective], comma list (default all)")
    ap.add_argument("--precisions", default="bf16", help="pretrainer precisions (fp32,bf16); bf16 = recipes' default")
    ap.add_argument("--batch", type=int, default=128, help="pretrainer batch (images per step)")
    ap.add_argument("--versus-batches", default="128,64", help="batches of the lightly comparison")
    ap.add_argument("--threads", type=int, default=common.DEFAULT_THREADS)
    ap.add_argument("--methods", default=None, help="versus methods (default simclr,byol,simsiam,mae)")
    ap.add_argument("--quality-minutes", type=float, default=3.0)
    ap.add_argument("--to-pixels-sides", default="ours,lightly",
                    help="to_pixels sides (ours,lightly): ~1 h or more each at full size, one per call merges")
    ap.add_argument("--inproc", action="store_true", help="pretrainer cases in this process (no fresh-process memory)")
    a = ap.parse_args(argv)
    sections = tuple(a.only.split(",")) if a.only else DEFAULT
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")

    common.set_threads(a.threads)
    out_path = Path(a.out)
    results = {}
    if a.merge and out_path.is_file():
        results = json.loads(out_path.read_text())
        if results.get("schema") != SCHEMA:
            results = {}
    results["schema"] = SCHEMA
    runs = results.setdefault("runs", [])
    machine = common.machine()
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    run_info = dict(command=command, started=datetime.datetime.now().isoformat(timespec="seconds"),
                    quick=a.quick, sections=list(sections), machine=machine,
                    machine_line=common.machine_line(machine), settings=dict(
                        threads=a.threads, batch=8 if a.quick else a.batch,
                        precisions=a.precisions.split(","), image_size=32))
    runs.append(run_info)
    run_index = len(runs) - 1
    print(f"machine: {run_info['machine_line']}\nload average: {machine['load_average']}")

    def section(name, fn):
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        load0 = list(os.getloadavg())
        try:
            data = fn()
        except Exception as e:  # a failing section is recorded, the others still run
            import traceback
            traceback.print_exc()
            data = dict(error=f"{type(e).__name__}: {e}")
        if isinstance(data, dict) and name in ("pretrainers", "versus", "to_pixels"):
            for case in data.values():
                if isinstance(case, dict):
                    case["run"] = run_index
            old = (results.get(name) or {}).get("data")
            if a.merge and isinstance(old, dict) and "error" not in old:
                # case-level merge: re-run some cases only (a run without its data keeps what was there)
                data = old if "skipped" in data and "skipped" not in old else {**old, **data}
        results[name] = dict(data=data, run=run_index, seconds=time.perf_counter() - t0,
                             load_before=load0, load_after=list(os.getloadavg()))
        _write(out_path, results)

    if "peak" in sections:
        from benchmarks import peak
        section("peak", lambda: peak.run(a.quick))
    peak_data = (results.get("peak") or {}).get("data")
    if "pretrainers" in sections:
        cases = a.cases.split(",") if a.cases else None
        section("pretrainers", lambda: run_pretrainers(cases, a.quick, a.batch, a.precisions.split(","),
                                                       a.threads, peak_data, a.inproc))
    if "versus" in sections:
        from benchmarks import versus
        methods = tuple(a.methods.split(",")) if a.methods else versus.peer_lightly.METHODS
        batches = tuple(int(b) for b in a.versus_batches.split(","))
        section("versus", lambda: versus.run(a.quick, methods, batches))
    if "masking" in sections:
        from benchmarks import masking
        pre = (results.get("pretrainers") or {}).get("data") or {}
        section("masking", lambda: dict(batched_vs_loop=masking.run(a.quick), ratios=masking.derive(pre)))
    if "loading" in sections:
        from benchmarks import loading
        section("loading", lambda: loading.run(a.quick))
    if "diagnostics" in sections:
        from benchmarks import diagnostics
        section("diagnostics", lambda: diagnostics.run(a.quick))
    if "quality" in sections:
        from benchmarks import quality
        kw = (dict(minutes=min(a.quality_minutes, 0.05), batch=16, knn_train=200, knn_test=100)
              if a.quick else dict(minutes=a.quality_minutes))
        section("quality", lambda: quality.run(**kw))
    if "to_pixels" in sections:
        from benchmarks import to_pixels
        sides = tuple(a.to_pixels_sides.split(","))
        kw = (dict(knn_train=200, knn_test=100, check_every=0.125,
                   overrides=("limit_train=512", "batch_size=32", "epochs=1", "max_steps=4")) if a.quick else {})
        section("to_pixels", lambda: to_pixels.run(sides, **kw))
    run_info["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    run_info["load_average_end"] = list(os.getloadavg())
    _write(out_path, results)
    from benchmarks import report
    print(report.render(results))
    return results


def _write(path: Path, results: dict) -> None:
    from zoo.runs import atomic_write
    atomic_write(path, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
