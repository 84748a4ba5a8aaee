"""The object-store pages a Ray Data driver maps, by pipeline setting, without a model.

The shape of `ragbatch index` on Ray with nothing else in it: fast reading and chunking
(rows of ~1 KB of text) -> a slow actor (a fixed sleep per batch of 256 stands in for
the embedder) -> the driver, which reads every result block. Each setting runs in a new
process with a new local Ray and prints the driver's RssShmem (the object-store pages it
has mapped and touched) as rows go by:

- `defaults`: Ray Data's 128 MiB blocks and its default object-store budget;
- `blocks`: 1 MiB blocks only;
- `budget`: the default blocks and ragbatch's object-store budget only;
- `ragbatch`: both, as `ragbatch.ray_executor.pipeline_memory` sets them.

    python benchmarks/object_store_bench.py [--rows 300000] [--settings defaults,ragbatch]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
import ray
from ragbatch.ingest import ray_executor
setting, rows, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def shmem_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("RssShmem:"))
    return int(line.split()[1]) // 1024
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
context = ray.data.DataContext.get_current()
context.enable_progress_bars = False
if setting == "ragbatch":
    ray_executor.pipeline_memory(1)
elif setting == "blocks":
    context.target_max_block_size = ray_executor.BLOCK_BYTES
elif setting == "budget":
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = limits.copy(object_store_memory=ray_executor.STORE_BYTES_PER_ACTOR)
class SlowActor:
    def __call__(self, batch):
        time.sleep(0.02)
        return {"id": batch["id"], "text": batch["text"]}
def chunk(row):
    return [{"id": row["id"] * 100 + i, "text": "y" * 1000} for i in range(100)]
dataset = (
    ray.data.range(rows // 100)
    .flat_map(chunk, num_cpus=0.5)
    .map_batches(SlowActor, batch_size=256, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
)
seen, mark, started, timeline = 0, every, time.perf_counter(), []
for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
    seen += len(batch["id"])
    if seen >= mark:
        timeline.append(f"{seen // 1000}k:{shmem_mib()}")
        mark += every
print(f"RESULT {setting}: {seen} rows in {time.perf_counter() - started:.0f} s, driver RssShmem MiB by rows read: " + " ".join(timeline) + f"; end {shmem_mib()}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--settings", default="defaults,blocks,budget,ragbatch")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_DATA_LOG_LEVEL": "ERROR"}
    env.pop("RAY_ADDRESS", None)
    for setting in args.settings.split(","):
        done = subprocess.run([sys.executable, "-c", CHILD, setting, str(args.rows), str(args.rows // 8)], env=env, capture_output=True, text=True)
        line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
        print(line[7:] if line else f"{setting} failed:\n{done.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
