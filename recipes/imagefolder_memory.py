"""Peak memory against data size: one recipe (RECIPE below) run on two generated image folders.

Usage: python recipes/imagefolder_memory.py OUT_FOLDER [SMALL LARGE]   (default 2000 16000 images)
Writes OUT_FOLDER/memory.md: images, split size on disk, peak resident memory of the run
(report.json's `memory`), and the ratios large / small. Memory that follows the
data grows with the image count; memory that follows the batch size stays flat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CLASSES = 4
RECIPE = """\
name: imagefolder-memory
seed: 0
model: {{arch: resnet, options: {{width: 16, blocks: [1, 1]}}}}
data: {{source: imagefolder, path: {path}, image_size: 64, channels: 3}}
stages:
  - {{type: train, epochs: 1, batch_size: 64}}
  - {{type: export}}
  - {{type: quantize, calibration: {{samples: 128}}}}
  - {{type: prune, input: train, ratio: 0.5}}
  - {{type: finetune, epochs: 1, batch_size: 64, distill: {{}}}}
  - {{type: export, name: export-pruned, variant: pruned}}
targets: [{targets}/cpu-onnxruntime.yaml]
"""


def make_folder(folder: Path, count: int, size: int = 64) -> None:
    """`count` PNGs in CLASSES class folders: a bright square whose corner names the class, on noise."""
    if (folder / ".complete").is_file():
        return
    rng = np.random.default_rng(count)
    for i in range(count):
        label = i % CLASSES
        image = rng.integers(0, 96, (size, size, 3), dtype=np.uint8)
        top, left = (label // 2) * size // 2, (label % 2) * size // 2
        image[top + 8 : top + 24, left + 8 : left + 24] = 255
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i}.png")
    (folder / ".complete").touch()


def run(folder: Path, out: Path) -> dict:
    recipe = out.with_suffix(".yaml")
    recipe.write_text(RECIPE.format(path=folder.resolve(), targets=HERE.parent / "targets"))
    subprocess.run([sys.executable, "-m", "compress", "run", str(recipe), "-o", str(out)], check=True, cwd=HERE.parent)
    report = json.loads((out / "report.json").read_text())
    split = sum(f.stat().st_size for f in (out / "cache").glob("data-*/x_*.npy"))
    return {**report["memory"], "split_mb": round(split / 2**20, 1)}


def main() -> None:
    root = Path(sys.argv[1])
    sizes = [int(n) for n in sys.argv[2:4]] or [2000, 16000]
    rows = {}
    for count in sizes:
        make_folder(root / f"images-{count}", count)
        rows[count] = run(root / f"images-{count}", root / f"run-{count}")
    small, large = sizes
    lines = ["| images | split on disk (MB) | peak RSS (MB) |", "|---|---|---|"]
    lines += [f"| {n} | {r['split_mb']} | {r['peak_rss_mb']} |" for n, r in rows.items()]
    lines.append(f"| ratio {large}/{small} | {rows[large]['split_mb'] / rows[small]['split_mb']:.2f} | "
                 f"{rows[large]['peak_rss_mb'] / rows[small]['peak_rss_mb']:.2f} |")  # fmt: skip
    (root / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
