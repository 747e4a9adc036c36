"""Peak memory of ``sr_folder`` against input size: one 8-bit PNG per size, super-resolved ×4 in a process of its own.

    .venv/bin/python tools/sr_folder_memory.py                       # bicubic, 1000² … 8000² gray inputs
    .venv/bin/python tools/sr_folder_memory.py --sides 1000 6000 --colour --out my.json

Each run is ``python -m thermsr_utils.sr_folder --model MODEL --input <one image> --output <folder>`` with its
default tiling; its peak resident memory is the child's ``ru_maxrss`` (``os.wait4``), its time the wall clock.
A Markdown table is printed and a JSON written (default ``artifacts/bench/sr_folder_memory.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_input(path: Path, side: int, colour: bool, seed: int = 0) -> None:
    """A smooth thermal-like 8-bit image (gradient, warm blobs, mild noise), written as PNG."""
    import cv2

    rng = np.random.default_rng(seed)
    small = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 4)
    img = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / max(float(np.ptp(img)), 1e-6) * 200 + 20
    img = np.clip(img + rng.normal(0, 2, img.shape).astype(np.float32), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if colour else img)


def measure(side: int, model: str, colour: bool, work: Path) -> dict:
    """One ``sr_folder`` run on a side×side input: peak RSS (MB), seconds, output size."""
    src, out = work / f"in_{side}", work / f"out_{side}"
    src.mkdir()
    make_input(src / "frame.png", side, colour)
    cmd = [sys.executable, "-m", "thermsr_utils.sr_folder", "--model", model, "--input", str(src), "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    log = proc.stdout.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    written = out / "frame.png"
    rec = {"side": side, "output_side": 4 * side, "colour": colour, "exit_code": code, "seconds": round(seconds, 1),
           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "input_mb": round(side * side * (3 if colour else 1) / 2**20, 1),
           "output_raw_mb": round((4 * side) ** 2 * (3 if colour else 1) / 2**20, 1),
           "output_png_mb": round(written.stat().st_size / 2**20, 1) if written.is_file() else None}
    if code != 0:
        rec["log"] = log[-2000:]
    for p in (src / "frame.png", written):
        p.unlink(missing_ok=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[1000, 2000, 4000, 6000, 8000])
    ap.add_argument("--model", default="bicubic")
    ap.add_argument("--colour", action="store_true", help="3-channel inputs (default: gray, as thermal frames are)")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench" / "sr_folder_memory.json")
    args = ap.parse_args(argv)
    if any(s < 8 for s in args.sides):
        ap.error("--sides must be at least 8 px")
    rows = []
    with tempfile.TemporaryDirectory(prefix="thermsr-srmem-") as tmp:
        for side in args.sides:
            rows.append(measure(side, args.model, args.colour, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"model": args.model, "colour": args.colour, "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rows": rows}
    sys.path.insert(0, str(REPO))
    from thermsr_utils.io import atomic_write_json

    atomic_write_json(args.out, result)
    print("\n| input | output | peak RSS | output, raw uint8 | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']}² {'colour' if r['colour'] else 'gray'} | {r['output_side']}² | "
              f"{r['peak_rss_mb'] / 1024:.2f} GB | {r['output_raw_mb'] / 1024:.2f} GB | {r['seconds']:.0f} |"
              + ("" if r["exit_code"] == 0 else f" exit {r['exit_code']}"))
    print(f"written to {args.out}")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
