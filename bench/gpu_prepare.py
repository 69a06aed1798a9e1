"""Small embedded stores for the GPU check (`make gpu-prepare`): 4 Anny subjects at full resolution, 4 motions of 6
frames each (3 train, 1 test per subject), per-template geodesic labels, 10k surface samples per frame and 20k
evaluation points of each kind, so the stores and the wheels stay well under the 64 MiB that travel to the GPU
machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from hipnet.pipeline.core.config import PreprocessConfig
from hipnet.pipeline.embedded.generate import generate_dataset, make_anny_manifest
from hipnet.pipeline.readers.anny import AnnyReader
from hipnet.pipeline.runner.driver import preprocess_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for train.zarr and test.zarr")
    p.add_argument("--raw", type=Path, default=Path("data/raw/anny_gpu"), help="the generated raw data")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    manifest = make_anny_manifest(seed=0, n_realistic=4, n_heldout=0, extremes=(), sequences_per_subject=4,
                                  frames_per_sequence=6, key_every=3, topology="full")
    generate_dataset(manifest, args.raw)
    cfg = PreprocessConfig(surface_points=10_000, eval_points=20_000, geodesics="per-template", shard_frames=8)
    for split in ("train", "test"):
        summary = preprocess_split(AnnyReader(args.raw, (split,)), args.out, cfg, split, workers=args.workers)
        print(summary)


if __name__ == "__main__":
    main()
