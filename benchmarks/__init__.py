"""The zoo's benchmark suite: speed, efficiency and quality, side by side with lightly.

One command runs it, prints a table and writes JSON (see BENCHMARKS.md at the repository root):

    python -m benchmarks.run --out benchmarks/results.json          # full measured run
    python -m benchmarks.run --quick --out /tmp/bench.json          # seconds-to-minutes smoke run
    python -m benchmarks.report benchmarks/results.json             # JSON -> BENCHMARKS.md

Sections (each a module): `peak` (matmul GFLOP/s, the machine's limit), `pretrainers` (every
registered pretrainer at CPU scale: images/s, step time, peak memory, MFU), `versus` (ours vs
lightly on SimCLR/BYOL/SimSiam/MAE, with `peer_lightly` building lightly's side), `quality` (kNN
on Fashion-MNIST after equal CPU minutes), `masking` (what masking itself costs) and `loading`
(`zoo.create_model(..., pretrained=True)` latency vs vanilla timm).
"""
