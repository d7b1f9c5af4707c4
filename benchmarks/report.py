"""Results JSON -> markdown tables (and BENCHMARKS.md). No number is typed by hand: every figure
in BENCHMARKS.md comes from a results file written by `python -m benchmarks.run`.

    python -m benchmarks.report benchmarks/results.json                    # print the tables
    python -m benchmarks.report benchmarks/results.json \\
        --change "the attention change=benchmarks/results_before_attention.json,benchmarks/results_after_attention.json" \\
        --change "the 1 x 1 convolution change=benchmarks/results_before_conv.json" \\
        --change "the one-pass tap gradient=benchmarks/results_before_taps.json" \\
        --write BENCHMARKS.md --readme README.md                           # regenerate the page
    python -m benchmarks.report ... --check          # the same arguments: exit 1 if either is stale

`--readme` fills README.md's benchmark headline (between its `benchmarks:start` / `end`
markers) from the same results, so the README states no number that results.json does not hold.

Example:
    >>> from benchmarks.report import render
    >>> "Machine" in render({"runs": [{"machine_line": "x", "command": "c", "started": "t"}]})
    True
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _data(results: dict, name: str):
    sec = results.get(name)
    return (sec or {}).get("data"), sec


def _section_note(results: dict, sec: dict) -> str:
    run = results["runs"][sec["run"]]
    return (f"_Run {sec['run']}: `{run['command']}` ({run['started']}, {sec['seconds']:.0f} s; "
            f"load average before/after {sec['load_before'][0]:.2f}/{sec['load_after'][0]:.2f})._")


def peak_table(d: dict) -> str:
    rows = [[p, r["n"], _f(r["gflops"], "{:.1f}"), _f(r["spread"], "{:.1%}")] for p, r in d.items()]
    return _table(["precision", "matmul n x n", "GFLOP/s (median)", "spread"], rows)


def pretrainer_table(d: dict) -> str:
    rows = []
    for key, r in d.items():
        if "error" in r:
            rows.append([r.get("case", key), r.get("precision", ""), "error: " + r["error"][:80]] + [""] * 7)
            continue
        phases = ", ".join(f"{p} {s:.3f}" for p, s in r["phase_s"].items()) if len(r["phase_s"]) > 1 else ""
        rows.append([r["case"], r["precision"], r["batch"], _f(r["images_per_s"], "{:.1f}"),
                     _f(r["step_s"], "{:.3f}") + (f" ({phases})" if phases else ""),
                     _f(r["flops_per_step"] / 1e9, "{:.1f}"), _f(r["achieved_gflops"], "{:.1f}"),
                     _f(r.get("mfu"), "{:.1%}"), _f(r["peak_mem_mb"], "{:.0f}"), r.get("optimizer", "")])
    notes = [f"- {r['case']}: {r['note']}" for r in d.values() if r.get("note")]
    return _table(["pretrainer[:objective]", "precision", "batch", "images/s", "step s (per phase)",
                   "GFLOP/step", "GFLOP/s", "MFU", "peak mem MiB", "optimizer"], rows) + (
        "\n\n" + "\n".join(notes) if notes else "")


def versus_table(d: dict) -> str:
    rows = []
    for m, r in d.items():
        if "error" in r:
            rows.append([m, "error: " + r["error"][:80]] + [""] * 8)
            continue
        s = r["step_s"]
        rows.append([f"{m} ({r['arch']})", r["batch"],
                     f"{r['loss_ours']:.6f} / {r['loss_theirs_mapped']:.6f}",
                     f"{r['loss_rel_diff']:.1e} / {r['grad_rel_diff']:.1e}",
                     f"{s['ours_fp32']:.3f} / {s['theirs_fp32']:.3f}", _f(r["ratio_fp32"]),
                     f"{s['ours_bf16']:.3f} / {s['theirs_bf16']:.3f}", _f(r["ratio_bf16"]),
                     _f(r["speedup_default"]) + "x"])
    return _table(["method", "batch", "loss ours / lightly (mapped)", "rel. diff loss / grad",
                   "step s fp32 ours / lightly", "ratio fp32 (<= 1.05)",
                   "step s bf16+CL ours / lightly", "ratio bf16 (<= 1.05)",
                   "ours bf16+CL vs lightly fp32 (>= 1.5x)"], rows)


def masking_tables(d: dict) -> str:
    rows = []
    for key, r in d.get("batched_vs_loop", {}).items():
        if "error" in r:
            rows.append([key, "error: " + r["error"][:80], "", "", ""])
            continue
        rows.append([f"{r['arch']}, K = {r['K']} ({r['kind']})", r["precision"], r["batch"],
                     f"{r['seconds']['batched']:.3f} / {r['seconds']['loop']:.3f}", _f(r["speedup"]) + "x"])
    out = _table(["encoder, masks", "precision", "batch", "fwd+bwd s batched / loop", "loop / batched"], rows)
    ratios = d.get("ratios") or {}
    if ratios:
        out += "\n\n" + _table(["cost ratio", "precision", "step time ratio (per image)", "FLOPs ratio"],
                               [[k, r["precision"], _f(r["step_ratio"]), _f(r["flops_ratio"])]
                                for k, r in ratios.items()])
    return out


def loading_table(d: dict) -> str:
    rows = [[k, _f(r["import_s"], "{:.2f}"), _f(r["cold_s"], "{:.3f}"), _f(r["warm_s"], "{:.3f}")]
            for k, r in d["loaders"].items()]
    return (_table(["loader", "import s", "cold call s", "warm call s (median)"], rows)
            + f"\n\nWeight: {d['source']}, {d['file_mb']:.1f} MiB; zoo / vanilla timm: cold "
              f"{d['cold_ratio']:.2f}x, warm {d['warm_ratio']:.2f}x (vs timm + sha256: "
              f"{d['warm_ratio_vs_sha']:.2f}x).")


def diagnostics_tables(d: dict) -> str:
    rows = [[r["tokens"], r["sequences"], r["precision"], f"{r['fused_s'] * 1e3:.2f}",
             f"{r['plain_s'] * 1e3:.2f}", _f(r["fused_over_plain"]) + "x"]
            for r in d["attention"].values()]
    out = ("Attention, forward + backward, 3 heads x 64:\n\n"
           + _table(["tokens", "sequences", "precision", "fused SDPA ms", "plain ms", "fused / plain"], rows))
    rp = d["resnet_phases"]
    zoo = "bf16_zoo" in rp                  # results before zoo/kernels.py have two variants
    rows = [[k, f"{rp['fp32'][k] * 1e3:.1f}", f"{rp['bf16'][k] * 1e3:.1f}", _f(rp["speedup"][k]) + "x"]
            + ([f"{rp['bf16_zoo'][k] * 1e3:.1f}", _f(rp["speedup_zoo"][k]) + "x"] if zoo else [])
            for k in rp["fp32"]]
    out += (f"\n\nResNet-18, 32 px, batch {rp['batch']}, one step split:\n\n"
            + _table(["part", "fp32 ms", "bf16 + channels_last ms", "speedup"]
                     + (["bf16 + channels_last + zoo kernels ms", "speedup"] if zoo else []), rows))
    return out


def quality_table(d: dict) -> str:
    if "skipped" in d:
        return f"Skipped: {d['skipped']}"
    rows = []
    for key, r in d["runs"].items():
        k = r["knn"]
        rows.append([key, r.get("precision", "-"), r.get("steps", "-"), r.get("images", "-"),
                     _f(r.get("images_per_s"), "{:.1f}"), _f(k.get("knn_top1_k20", k.get(20))),
                     _f(k.get("knn_top1_k200", k.get(200)))])
    return (_table(["run", "precision", "steps", "images", "images/s", "kNN top-1 k=20", "kNN top-1 k=200"], rows)
            + f"\n\nBudget: {d['minutes']} min of training-step time per run, batch {d['batch']}; kNN on "
              f"{d['knn_train']} train / {d['knn_test']} test images.")


def to_pixels_table(d: dict) -> str:
    if "skipped" in d:
        return f"Skipped: {d['skipped']}"
    sides = {k: d[k] for k in ("ours", "lightly") if isinstance(d.get(k), dict)}
    rows = []
    for side, r in sides.items():
        if "error" in r:
            rows.append([side, "-", "-", "-", f"ERROR {r['error'][:200]}", r.get("machine", "-").split(";")[0]])
            continue
        hit, raw = r["beaten_at"], r["raw_pixels"]["knn_top1_k20"]
        when = (f"{hit['step_minutes']:.1f} / {hit['wall_minutes']:.1f} min, epoch {hit['epochs']:g}, "
                f"kNN {hit['knn_top1_k20']:.2f}" if hit else
                f"not within {r['settings']['epochs']} epochs (best {r['best']['knn_top1_k20']:.2f} at epoch "
                f"{r['best']['epochs']:g}, {r['best']['step_minutes']:.1f} step-min)")
        rows.append([side, r["precision"], _f(r["images_per_s"], "{:.1f}"), _f(raw), when,
                     r["machine"].split(";")[0]])
    out = _table(["side", "precision", "images/s (training steps)", "raw pixels kNN k=20",
                  "first above raw pixels: step / wall minutes, epoch, kNN k=20", "host"], rows)
    done = {k: r for k, r in sides.items() if "error" not in r}
    if len(done) == 2:
        o, t = done["ours"], done["lightly"]
        if (o["settings"], o["machine"]) != (t["settings"], t["machine"]):
            out += "\n\nThe two sides ran with different settings or on different hosts: not compared."
        elif o["beaten_at"] and t["beaten_at"]:
            out += (f"\n\nCPU-minutes to beat raw pixels, lightly / ours: "
                    f"{t['beaten_at']['step_minutes'] / o['beaten_at']['step_minutes']:.2f}x.")
    if done:
        st = next(iter(done.values()))["settings"]
        out += (f"\n\nRecipe `{st['recipe']}`{' with ' + ' '.join(st['overrides']) if st['overrides'] else ''} "
                f"({st['image_size']} px, batch {st['batch']}, {st['epochs']} epochs), both sides from the same "
                f"initial weights, images and views; kNN every {st['check_every_epochs']:g} epoch on "
                f"{st['knn_train']} train / {st['knn_test']} test images. Step minutes count forward, backward "
                "and optimizer; wall minutes add the shared augmentation (not the checks).")
    return out


def before_after(before: dict, after: dict) -> str:
    """Ratios from an earlier results file next to the current ones (the gap-closing record)."""
    b, a = (before.get("versus") or {}).get("data") or {}, (after.get("versus") or {}).get("data") or {}
    rows = []
    for m in a:
        if m in b and "ratio_fp32" in a[m] and "ratio_fp32" in b[m]:
            rows.append([m, _f(b[m]["ratio_fp32"]), _f(a[m]["ratio_fp32"]), _f(b[m]["ratio_bf16"]),
                         _f(a[m]["ratio_bf16"]), _f(b[m]["speedup_default"]) + "x",
                         _f(a[m]["speedup_default"]) + "x"])
    bm = ((before.get("masking") or {}).get("data") or {}).get("batched_vs_loop", {})
    am = ((after.get("masking") or {}).get("data") or {}).get("batched_vs_loop", {})
    ident = lambda r: (r.get("arch"), r.get("K"), r.get("kind"), r.get("precision"), r.get("batch"))  # noqa: E731
    bm = {ident(r): r for r in bm.values()}
    for k, r in am.items():
        b = bm.get(ident(r))
        if b and "speedup" in r and "speedup" in b:
            rows.append([f"K-mask loop / batched: {k}", "", "", "", "", _f(b["speedup"]) + "x",
                         _f(r["speedup"]) + "x"])
    out = _table(["method", "fp32 ratio before", "after", "bf16 ratio before", "after",
                  "speedup before", "after"], rows)
    bp = (before.get("pretrainers") or {}).get("data") or {}
    ap = (after.get("pretrainers") or {}).get("data") or {}
    rows = [[k, _f(bp[k]["images_per_s"], "{:.1f}"), _f(ap[k]["images_per_s"], "{:.1f}"),
             _f(ap[k]["images_per_s"] / bp[k]["images_per_s"]) + "x"]
            for k in ap if k in bp and "images_per_s" in ap[k] and "images_per_s" in bp[k]]
    if rows:
        out += "\n\n" + _table(["pretrainer", "images/s before", "after", "after / before"], rows)
    return out


def summary(results: dict, changes: dict[str, tuple[dict, dict]] | None = None) -> str:
    """The targets of issue 6, checked against the numbers (computed here, never typed)."""
    lines = []
    vs = {k: r for k, r in ((results.get("versus") or {}).get("data") or {}).items() if "ratio_fp32" in r}
    if vs:
        worst = max(max(r["ratio_fp32"], r["ratio_bf16"]) for r in vs.values())
        ok = all(max(r["ratio_fp32"], r["ratio_bf16"]) <= 1.05 for r in vs.values())
        lines.append(f"- Equal settings (ours / lightly step time, fp32 and bf16, every shared method and "
                     f"batch): worst {worst:.2f} -> {'met' if ok else 'NOT met'} (<= 1.05).")
        eq = all(r["loss_equal"] for r in vs.values())
        lines.append(f"- Same weights, same inputs: losses and backbone gradients "
                     f"{'equal up to float rounding in every case' if eq else 'DIFFER in some case'}.")
        met = [k for k, r in vs.items() if r["speedup_default"] >= 1.5]
        missed = [f"{k} ({vs[k]['speedup_default']:.2f}x)" for k in vs if k not in met]
        lines.append(f"- Default precision (ours bf16 + channels_last vs lightly fp32): >= 1.5x in "
                     f"{len(met)} of {len(vs)} cases" + (f"; below: {', '.join(missed)}." if missed else "."))
    mk = ((results.get("masking") or {}).get("data") or {}).get("batched_vs_loop") or {}
    mk = {k: r for k, r in mk.items() if "speedup" in r}
    if mk:
        lines.append("- Batched K-mask forward vs a loop over masks (loop / batched): "
                     + ", ".join(f"{k}: {r['speedup']:.2f}x" for k, r in mk.items()) + ".")
    dg = (results.get("diagnostics") or {}).get("data") or {}
    if "attention" in dg:
        at = dg["attention"].values()
        for prec in ("bf16", "fp32"):
            xs = [r["fused_over_plain"] for r in at if r["precision"] == prec]
            if xs:
                lines.append(f"- CPU attention, fused SDPA / plain, {prec}: {min(xs):.2f}x to {max(xs):.2f}x "
                             f"over {', '.join(str(r['tokens']) for r in at if r['precision'] == prec)} tokens.")
    if "resnet_phases" in dg:
        sp = dg["resnet_phases"]["speedup"]
        lines.append(f"- ResNet-18 at 32 px, bf16 + channels_last over fp32: forward {sp['forward']:.2f}x, "
                     f"backward {sp['backward']:.2f}x, optimizer {sp['optimizer']:.2f}x.")
        if "speedup_zoo" in dg["resnet_phases"]:
            sz = dg["resnet_phases"]["speedup_zoo"]
            lines.append(f"- The same with the zoo's CPU kernels (zoo/kernels.py): forward {sz['forward']:.2f}x, "
                         f"backward {sz['backward']:.2f}x, optimizer {sz['optimizer']:.2f}x.")
    q = (results.get("quality") or {}).get("data") or {}
    for m in ("simclr", "byol"):
        o, t = (q.get("runs") or {}).get(f"{m}/ours"), (q.get("runs") or {}).get(f"{m}/lightly")
        if o and t:
            lines.append(f"- Quality, {m}, {q['minutes']} min each: kNN top-1 (k=20) ours {o['knn']['knn_top1_k20']:.2f} "
                         f"(bf16, {o['images']} images) vs lightly {t['knn']['knn_top1_k20']:.2f} (fp32, "
                         f"{t['images']} images).")
    ld = (results.get("loading") or {}).get("data") or {}
    if "loaders" in ld:
        lines.append(f"- create_model(pretrained=True), warm: zoo / vanilla timm {ld['warm_ratio']:.2f}x, "
                     f"zoo / (timm + sha256) {ld['warm_ratio_vs_sha']:.2f}x.")
    for label, (b, after) in (changes or {}).items():
        bp = (b.get("pretrainers") or {}).get("data") or {}
        ap = (after.get("pretrainers") or {}).get("data") or {}
        for family in ("resnet", "vit"):
            gains = [ap[k]["images_per_s"] / bp[k]["images_per_s"] for k in ap
                     if family in k and k in bp and "images_per_s" in ap[k] and "images_per_s" in bp[k]]
            if gains:
                lines.append(f"- After {label}: {family.replace('resnet', 'ResNet').replace('vit', 'ViT')} "
                             f"pretrainers {min(gains):.2f}x to {max(gains):.2f}x the images/s of before "
                             f"({len(gains)} pretrainers, bf16, same harness).")
    return "## Summary (computed from the results)\n\n" + "\n".join(lines) if lines else ""


README_START = "<!-- benchmarks:start (python -m benchmarks.report --readme README.md) -->"
README_END = "<!-- benchmarks:end -->"


def _span(xs, fmt="{:.2f}", unit="") -> str:
    lo, hi = min(xs), max(xs)
    return f"{fmt.format(lo)}{unit}" if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}{unit}-{fmt.format(hi)}{unit}"


def headline(results: dict) -> str:
    """README.md's benchmark lines: the lightly comparison and the fixed-budget quality, with the
    run that measured them (computed from `results`, like every table of BENCHMARKS.md)."""
    vs_sec = results.get("versus") or {}
    vs = {k: r for k, r in (vs_sec.get("data") or {}).items() if "ratio_fp32" in r}
    if not vs:
        return "\n".join([README_START, "", "No lightly comparison in benchmarks/results.json yet.", "", README_END])
    run = results["runs"][vs_sec["run"]]
    batches = sorted({r["batch"] for r in vs.values()}, reverse=True)
    cnn = [r for r in vs.values() if r["arch"] != "vit_tiny_patch4_32"]
    vit = [r for r in vs.values() if r["arch"] == "vit_tiny_patch4_32"]
    names = sorted({r["method"] for r in cnn}, key=["simclr", "byol", "simsiam"].index)
    pretty = {"simclr": "SimCLR", "byol": "BYOL", "simsiam": "SimSiam", "mae": "MAE"}
    met = sum(r["speedup_default"] >= 1.5 for r in vs.values())
    parts = []
    if cnn:
        parts.append(f"{', '.join(pretty[m] for m in names[:-1])} and {pretty[names[-1]]} on a ResNet-18 at "
                     f"32 px {_span([r['speedup_default'] for r in cnn], unit='x')} faster")
    if vit:
        parts.append(f"MAE on a ViT-Tiny/4 {_span([r['speedup_default'] for r in vit], unit='x')} faster")
    equal = all(r["loss_equal"] for r in vs.values())
    lines = [
        f"Measured on {run['machine_line'].split(';')[0]} (`{run['command']}`, {run['started'][:10]}; sides "
        f"interleaved in one run, batch {' and '.join(map(str, batches))}). Against lightly, each library in "
        f"its default precision (ours bf16 + channels_last, lightly's examples fp32), the zoo trains "
        + " and ".join(parts) + f" (1.5x or more in {met} of {len(vs)} cases). At equal settings our step takes "
        f"{_span([r['ratio_fp32'] for r in vs.values()])} of lightly's in fp32 and "
        f"{_span([r['ratio_bf16'] for r in vs.values()])} in bf16 + channels_last, "
        + ("with equal losses and gradients on equal weights and inputs." if equal
           else "but the losses or gradients DIFFER in some case (see BENCHMARKS.md)."),
    ]
    q_sec = results.get("quality") or {}
    q = (q_sec.get("data") or {}).get("runs") or {}
    pairs = [(m, q[f"{m}/ours"], q[f"{m}/lightly"]) for m in ("simclr", "byol")
             if f"{m}/ours" in q and f"{m}/lightly" in q]
    if pairs:
        qrun = results["runs"][q_sec["run"]]
        lines.append(
            f"After the same {q_sec['data']['minutes']:g} minutes of training steps each (`{qrun['command']}`), "
            "kNN top-1 (k = 20) on Fashion-MNIST: " + "; ".join(
                f"{pretty[m]} ours {o['knn']['knn_top1_k20']:.1f} vs lightly {t['knn']['knn_top1_k20']:.1f} "
                f"({o['images']} vs {t['images']} images seen)" for m, o, t in pairs) + ".")
    wrap = dict(width=100, break_long_words=False, break_on_hyphens=False)
    return "\n".join([README_START, "", *("\n".join(textwrap.wrap(x, **wrap)) + "\n" for x in lines), README_END])


def _machines(results: dict) -> str:
    return "; ".join(sorted({r["machine_line"] for r in results.get("runs") or []})) or "-"


def render(results: dict, changes: dict[str, tuple[dict, dict]] | None = None) -> str:
    """`changes`: {what changed: (results from just before it, results after it, same machine)}."""
    head = summary(results, changes)
    parts = [head] if head else []
    runs = results.get("runs") or []
    if runs:
        parts.append("## Machine\n\n" + "\n".join(f"- run {i}: {r['machine_line']} (`{r['command']}`, {r['started']})"
                                                  for i, r in enumerate(runs)))
    for name, title, fn in (("peak", "Machine limit: matmul", peak_table),
                            ("pretrainers", "Every pretrainer at CPU scale", pretrainer_table),
                            ("versus", "Ours vs lightly (same backbone, heads, batch, inputs)", versus_table),
                            ("masking", "What masking costs", masking_tables),
                            ("loading", "create_model latency", loading_table),
                            ("diagnostics", "Diagnostics: attention kernels, ResNet at 32 px", diagnostics_tables),
                            ("quality", "Quality at a fixed budget (Fashion-MNIST kNN)", quality_table),
                            ("to_pixels", "Time to beat raw pixels (SimCLR, Fashion-MNIST kNN)", to_pixels_table)):
        d, sec = _data(results, name)
        if d is None:
            continue
        body = f"Error: {d['error']}" if isinstance(d, dict) and set(d) == {"error"} else fn(d)
        parts.append(f"## {title}\n\n{body}\n\n{_section_note(results, sec)}")
    for label, (b, after) in (changes or {}).items():
        parts.append(f"## Before / after {label}\n\n" + before_after(b, after)
                     + f"\n\n_Before: {_machines(b)}. After: {_machines(after)}._")
    return "\n\n".join(parts) + "\n"


PREAMBLE = Path(__file__).with_name("BENCHMARKS_PREAMBLE.md")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--change", action="append", default=[], metavar="WHAT=BEFORE[,AFTER]",
                    help="what a change was, the results file from just before it and the one from "
                         "after it on the same machine (default: the main results); repeatable, one "
                         "before/after table each")
    ap.add_argument("--write", default=None, help="write the page (preamble + tables) to this path")
    ap.add_argument("--readme", default=None, help="fill this README's benchmark headline block")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if --write's page or --readme's block is not what the results give")
    argv = list(sys.argv[1:] if argv is None else argv)
    a = ap.parse_args(argv)
    results = json.loads(Path(a.results).read_text())
    changes = {}
    for item in a.change:
        label, sep, paths = item.rpartition("=")
        if not sep or not label:
            ap.error(f"--change {item!r}: expected WHAT=BEFORE[,AFTER], e.g. 'the attention change=b.json,a.json'")
        before, _, after = paths.partition(",")
        changes[label] = (json.loads(Path(before).read_text()),
                          json.loads(Path(after).read_text()) if after else results)
    text = render(results, changes)
    cmd = "python -m benchmarks.report " + " ".join(
        (f'"{x}"' if " " in x else x) for x in argv if x != "--check")
    status = 0
    if a.write:
        from zoo.runs import atomic_write
        page = PREAMBLE.read_text() + f"\n<!-- generated by `{cmd}`; do not edit the tables by hand -->\n\n" + text
        if not a.check:
            atomic_write(a.write, page)
        elif Path(a.write).read_text() != page:
            print(f"{a.write} is out of date with {a.results}: run {cmd}")
            status = 1
    if a.readme:
        from train.readme_table import fill_block
        status |= fill_block(Path(a.readme), README_START, README_END, headline(results), a.check, a.results, cmd)
    if not a.check:
        print(text)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
