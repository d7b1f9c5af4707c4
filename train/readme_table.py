"""Regenerate README.md's released-weight tables from the model cards (never typed by hand).

    python train/readme_table.py            # rewrite the block between the markers in README.md
    python train/readme_table.py --check    # exit 1 if README.md is not what the cards say

Reads zoo/released.json and each release's `weights/<name>.<tag>/config.json` (its `zoo` block:
the metrics the card states, the training facts, the per-seed table) and the pairings of
weights/releases.yaml (`controls`). Writes two tables: every released weight with its baselines,
and each method against its control(s), with the differences and the pretraining cost ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                     # run from a clone without installing
from train.recipe import BOOKKEEPING, Recipe, translate_legacy_phase_keys  # noqa: E402
from train.costs import clocks, cost, known_wall_clock_s, setting, short  # noqa: E402
from zoo.publish import SEED_COLUMNS, below_baselines  # noqa: E402
from zoo.registry import METHODS  # noqa: E402

README = REPO / "README.md"
START, END = "<!-- released:start (train/readme_table.py) -->", "<!-- released:end -->"
COLS = SEED_COLUMNS
LOW_LABEL_PCTS = ("1", "10")                                    # the low-label protocol's fractions (issue 12)
METHOD_KEYS = ("model", "objective", "model_args", "phases")   # what a method and its control may differ in


def cards(table_path: Path, weights_dir: Path) -> dict[str, dict]:
    """{name.tag: the zoo block of its config.json}, in table order."""
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    return {key: json.loads((weights_dir / key / "config.json").read_text())["zoo"] for key in table}


def data_of(card: dict) -> str:
    return str(card["recipe"].get("data", "fashion_mnist"))


def metric(card: dict, leaf: str, group: str = "") -> float | None:
    return card["metrics"].get(f"{data_of(card)}/{group}{leaf}")


def fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def seeds_of(card: dict, leaf: str) -> list[float]:
    return [row[leaf] for row in (card["metrics"].get("seeds") or {}).values() if row.get(leaf) is not None]


def mean_sd(card: dict, leaf: str) -> tuple[float | None, float | None, int]:
    """(mean, sd, n) over the card's seeds, or (the value, None, 1) for a single run."""
    values = seeds_of(card, leaf)
    if len(values) > 1:
        return statistics.mean(values), statistics.stdev(values), len(values)
    return metric(card, leaf), None, 1


def fmt_value(v) -> str:
    return "-" if v is None else str(v)


def with_sd(m, sd) -> str:
    return fmt(m) if sd is None else f"{m:.1f} ± {sd:.1f}"


def minutes(card: dict) -> float | None:
    wall = known_wall_clock_s(card["metrics"].get("pretrain") or {})
    return wall / 60 if wall else None


def time_ratio(a: dict, b: dict) -> str:
    """Method / control pretraining cost: each side's fastest run on one host and precision
    (train/costs.py); where the two share no setting, the cell names the setting of each side's
    first run with a clock (its released run where that has one)."""
    if not (clocks(a) and clocks(b)):
        return "-"
    both = cost(a, b)
    if both is None:
        sa, sb = clocks(a)[0][0], clocks(b)[0][0]
        names = [short(sa), short(sb)]
        if names[0] == names[1]:             # same CPU model, other core count or GPU: say it all
            names = [f"{m} {p}" for m, p in (sa, sb)]
        return f"not comparable: {names[0]} / {names[1]}"
    return f"{both[0] / both[1]:.2f}x"


def weights_table(all_cards: dict, weights_dir: Path) -> list[str]:
    header = ("| weight | method (base) | data | kNN k=20 | kNN k=200 | linear | untrained: kNN k=20 / linear | "
              "raw pixels: kNN k=20 / linear | "
              + "".join(f"{p} % labels: fine-tune / scratch / raw pixels | " for p in LOW_LABEL_PCTS)
              + "mask score (random, block) | pretraining | size |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for key, card in all_cards.items():
        pre = card["pretrainer"]
        method = METHODS[pre["model"]].method + (f" ({pre['objective']})" if pre.get("objective") else "")
        vals = [with_sd(*mean_sd(card, c)[:2]) for c in COLS]
        base = [f"{fmt(metric(card, 'knn_top1_k20', g))} / {fmt(metric(card, 'linear_top1', g))}"
                for g in ("untrained/", "raw_pixels/")]
        low_label = ""
        for p in LOW_LABEL_PCTS:
            low = [metric(card, f"finetune_top1_{p}pct"), metric(card, f"finetune_top1_{p}pct", "untrained/"),
                   metric(card, f"logreg_top1_{p}pct", "raw_pixels/")]
            low_label += (" / ".join(map(fmt, low)) if any(v is not None for v in low) else "-") + " | "
        ms = card["metrics"].get("scenes/mask_score")
        mask = "-" if ms is None else (f"{ms:.3f} ({card['metrics'].get('scenes/mask_score_random', 0):.3f}, "
                                       f"{card['metrics'].get('scenes/mask_score_block', 0):.3f})")
        pre_facts = card["metrics"].get("pretrain") or {}
        cost = (f"{minutes(card):.1f} min, {pre_facts.get('images', 0) // 1000}k img" if minutes(card) else "-")
        size = sum(f.stat().st_size for f in (weights_dir / key).glob("*.safetensors")) / 2 ** 20
        misses = below_baselines(card["metrics"], data_of(card))
        below = "<br>**below a trivial baseline:** " + "; ".join(misses) if misses else ""
        lines.append(f"| [`{key}`](weights/{key}/README.md){below} | {method} | {data_of(card)} | "
                     + " | ".join(vals) + f" | {base[0]} | {base[1]} | {low_label}{mask} | {cost} | {size:.0f} MB |")
    return lines


def setting_differences(a: dict, b: dict) -> dict[str, tuple]:
    """{key: (a's value, b's value)} for every recipe key two cards differ in beyond the method (its
    model, args and phases) and bookkeeping: a pair whose settings differ (two release rounds, say)
    is not a method-against-control comparison. Older cards' flat per-phase keys (`masker_lr`) are
    read in the `phases` format, and a field they predate takes its default (what they ran with);
    `max_steps` counts, since it cuts the schedule short."""
    defaults = Recipe().to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ra, rb = ({**defaults, **translate_legacy_phase_keys(dict(c["recipe"]), "card")} for c in (a, b))
    skip = (set(METHOD_KEYS) | set(BOOKKEEPING)) - {"max_steps"}
    return {k: (ra.get(k), rb.get(k)) for k in sorted(set(ra) | set(rb))
            if k not in skip and ra.get(k) != rb.get(k)}


def pairs_table(all_cards: dict, plan: list[dict]) -> list[str]:
    lines = ["| method | control | seeds | Δ kNN k=20 | Δ kNN k=200 | Δ linear | pretraining time, method / control |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for item in plan:
        key = Path(item["recipe"]).name.removesuffix(".yaml")
        for control in item.get("controls") or []:
            if key not in all_cards or control not in all_cards:
                continue
            a, b = all_cards[key], all_cards[control]
            differ = setting_differences(a, b)
            if differ:
                what = ", ".join(f"{k} {fmt_value(va)} / {fmt_value(vb)}" for k, (va, vb) in differ.items())
                lines.append(f"| `{key}` | `{control}` | - | not compared: trained with other settings ({what}) "
                             "| - | - | - |")
                continue
            deltas, n = [], []
            for c in COLS:
                (ma, sa, na), (mb, sb, nb) = mean_sd(a, c), mean_sd(b, c)
                if na == 1 or nb == 1:            # one side has a single run: seed against the same seed
                    (ma, sa, na), (mb, sb, nb) = (metric(a, c), None, 1), (metric(b, c), None, 1)
                n.append(min(na, nb))
                if ma is None or mb is None:
                    deltas.append("-")
                elif sa is not None and sb is not None:   # spread of a difference of two means
                    deltas.append(f"{ma - mb:+.1f} (± {(sa ** 2 / na + sb ** 2 / nb) ** 0.5:.1f})")
                else:
                    deltas.append(f"{ma - mb:+.1f}")
            lines.append(f"| `{key}` | `{control}` | {min(n)} | " + " | ".join(deltas) + f" | {time_ratio(a, b)} |")
            run = (a["metrics"].get("equal_compute") or {}).get(control)
            if run:
                lines.append(equal_compute_row(key, control, a, run))
    return lines


def equal_compute_row(key: str, control: str, method: dict, run: dict) -> str:
    """The method (mean of its seeds) against its control trained for the method's wall-clock (one
    run, train/release.py's `equal_compute`); the time cell divides the method's fastest run by that
    run's clock where the run had the budget's setting."""
    deltas, n = [], 1
    for c in COLS:
        m, _, n = mean_sd(method, c)
        deltas.append("-" if m is None or run.get(c) is None else f"{m - run[c]:+.1f}")
    budget, ran = run["budget"], setting(run.get("machine"), run.get("mixed_precision"))
    planned = tuple(budget["setting"]) if budget.get("setting") else None
    ratio = ("-" if not run.get("wall_clock_s") else f"{budget['method_wall_clock_s'] / run['wall_clock_s']:.2f}x"
             if ran == planned else f"not comparable: {short(planned)} / {short(ran)}")
    return (f"| `{key}` | `{control}` for the method's wall-clock ({budget['epochs']} epochs) | {n} / 1 | "
            + " | ".join(deltas) + f" | {ratio} |")


def block(table_path: Path, weights_dir: Path, plan_path: Path) -> str:
    all_cards = cards(table_path, weights_dir)
    if not all_cards:
        return "\n".join([START, "", "None yet: `zoo/released.json` is empty.", "", END])
    plan = yaml.safe_load(plan_path.read_text())["releases"]
    return "\n".join([START, "", *weights_table(all_cards, weights_dir), "",
                      "Each method against its control (same recipe, data, epochs and seed; Δ = method − control, "
                      "percentage points; where both have several seeds: difference of the means, ± its standard error; "
                      "else the released (first) seeds against each other; time: each side's fastest run on one host "
                      "and precision). A row \"for the method's wall-clock\" is the control trained that long "
                      "(one run; the method: mean of its seeds):", "",
                      *pairs_table(all_cards, plan), "", END])


def fill_block(readme: Path, start: str, end: str, block: str, check: bool, source: str, command: str) -> int:
    """Put `block` (its own markers included) between `start` and `end` in `readme`, or with
    `check` only compare: 0 if the file already says it, 1 (and a line naming `command`) if not."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    new = head + block + rest.split(end, 1)[1]
    if check:
        if new != text:
            print(f"{readme} is out of date with {source}: run {command}")
            return 1
        print(f"{readme} matches {source}")
        return 0
    from zoo.runs import atomic_write
    atomic_write(readme, new)
    print(f"wrote the block of {readme} made from {source}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the cards")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--table", type=Path, default=REPO / "zoo" / "released.json")
    ap.add_argument("--weights", type=Path, default=REPO / "weights")
    ap.add_argument("--plan", type=Path, default=REPO / "weights" / "releases.yaml")
    args = ap.parse_args(argv)
    return fill_block(args.readme, START, END, block(args.table, args.weights, args.plan), args.check,
                      "the cards", "python train/readme_table.py")


if __name__ == "__main__":
    sys.exit(main())
