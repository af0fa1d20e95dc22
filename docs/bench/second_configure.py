"""Configure time of the engine with the node's defaults, first start and restart.

Each configure runs in a fresh Python process (a node restarted by its launch file):
`SegmentationEngine(config)` then `prepare(height, width, "rgb8")`, timed together, with
the node's parameters (precision auto, backend auto, ...) for a checkpoint of seeded
random weights (written into CACHE first: a node loads the same weights at every start,
so its exported graph is cached too), 1 thread, and the choices cache in CACHE (empty at
the first start), then RESTARTS restarts (default 1) on the choices the first one stored.
Prints one JSON line per start: the network, which start, where the choices came from,
the seconds.

    python docs/bench/second_configure.py swiftnet_rn18 1024x512 CACHE [RESTARTS]
"""

import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
started = time.perf_counter()
import torch
from swiftseg_ros.engine import SegmentationEngine
from swiftseg_ros.ros.params import engine_config_from_params, validate_parameters
imported = time.perf_counter()
network, width, height, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
params = validate_parameters({"network": network, "weights": f"{cache}/{network}.pt",
                              "device": "cpu", "threads": 1})
config = engine_config_from_params(params).replace(cache_dir=cache)
began = time.perf_counter()
engine = SegmentationEngine(config)
engine.prepare(height, width, "rgb8")
done = time.perf_counter()
stats = engine.stats()
print(json.dumps({"network": network, "size": f"{width}x{height}",
                  "configure_s": round(done - began, 2),
                  "import_s": round(imported - started, 2),
                  "choices_source": stats["choices_source"],
                  "backend": stats["backend"], "precision": stats["precision"],
                  "threads": torch.get_num_threads()}))
"""


def write_checkpoint(network: str, folder: Path) -> None:
    import torch

    from swiftseg_ros.checkpoint import make_meta, save_checkpoint
    from swiftseg_ros.nets import NETWORKS, build_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    options = NETWORKS[network].inference_options
    model = build_model(network, 19, **options).eval()
    save_checkpoint(folder / f"{network}.pt", model, make_meta(network, 19,
                                                               network_options=options))


def main() -> int:
    network, size, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    restarts = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    width, height = size.split("x")
    write_checkpoint(network, Path(cache))
    for start in ["first"] + ["second"] * restarts:
        out = subprocess.run([sys.executable, "-c", CHILD, network, width, height, cache],
                             check=True, capture_output=True, text=True).stdout
        print(json.dumps({"start": start, **json.loads(out.strip().splitlines()[-1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
