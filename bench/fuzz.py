"""Fuzz image decoding, bundle loading, --config files and feature cache shards for a fixed time (issues 7, 18).

    python bench/fuzz.py --seconds 600            # every target, 600 s each
    python bench/fuzz.py --seconds 60 --target decode
    python bench/fuzz.py --seconds 60 --target config --target shard

The targets and their property are tests/reliability/test_fuzz.py's (CI runs them for a
few seconds, derandomized); here they run with fresh randomness in rounds of
``--round`` examples until the time is up. Each target runs in its own child
process, which writes every input to ``--out/<target>.last`` before trying
it: if the child dies (a segfault in a decoder or in ONNX Runtime) or hangs
(killed after twice its time + 5 minutes), that file is the culprit. A property failure is shrunk by Hypothesis and printed;
the run ends non-zero if anything was found. Prints one JSON line per target:
examples tried, seconds, failures."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("decode", "bundle_bytes", "bundle_metadata", "config", "shard")


def _child(target: str, seconds: float, round_size: int, out_dir: str) -> int:
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "reliability"))
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    import edgetl.data.image as image_mod
    import test_fuzz as tf

    image_mod.MAX_IMAGE_PIXELS = tf.FUZZ_PIXEL_LIMIT
    logging.getLogger("edgetl").setLevel(logging.ERROR)  # a refused shard's warning, thousands of times: noise
    strategy, check = {
        "decode": (tf.IMAGE_BYTES, lambda x: tf.check_decode(x)),
        "bundle_bytes": (tf.mutated([tf.MODEL_BYTES]), lambda x: tf.check_bundle(x, tf.LABELS_TEXT)),
        "bundle_metadata": (tf.metadata_model(), lambda x: tf.check_bundle(*x)),
        "config": (tf.CONFIG_BYTES, tf.check_config),  # in-process: TrainConfig.from_toml, as 'train --config' reads
        "shard": (tf.SHARD_FILES, tf.check_shard),
    }[target]
    last = os.path.join(out_dir, f"{target}.last")
    count = [0]

    def record(x) -> None:
        parts = x if isinstance(x, tuple) else (x,)
        with open(last, "w") as fh:
            json.dump([p.hex() for p in parts], fh)

    failures = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:

        @settings(max_examples=round_size, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @hseed(int.from_bytes(os.urandom(8), "little"))
        @given(strategy)
        def prop(x):
            count[0] += 1
            record(x)
            check(x)

        try:
            prop()
        except Exception as exc:  # Hypothesis has shrunk it; keep each distinct failure once
            text = "".join(traceback.format_exception_only(exc)).strip()
            first = text.splitlines()[0]
            seen = next((f for f in failures if f["error"] == first), None)
            if seen:
                seen["rounds"] += 1
            else:
                failures.append({"error": first, "rounds": 1, "example": text[:1500]})
                traceback.print_exc()
    print(json.dumps({"target": target, "examples": count[0], "seconds": round(time.monotonic() - start, 1),
                      "failures": failures}), flush=True)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target")
    parser.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    parser.add_argument("--round", type=int, default=300, help="examples per Hypothesis round")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "edgetl-fuzz"),
                        help="where each target's last input is kept (the crashing one after a crash)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.child:
        return _child(args.child, args.seconds, args.round, args.out)
    found = 0
    for target in args.target or TARGETS:
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", target, "--seconds", str(args.seconds),
                                   "--round", str(args.round), "--out", args.out], capture_output=True, text=True,
                                  timeout=2 * args.seconds + 300)
        except subprocess.TimeoutExpired:  # one input never finished: a hang
            found += 1
            print(json.dumps({"target": target, "hang": True, "input": os.path.join(args.out, f"{target}.last")}),
                  flush=True)
            continue
        if proc.returncode < 0:  # killed by a signal: a real crash of a native decoder
            found += 1
            print(json.dumps({"target": target, "crash": f"signal {-proc.returncode}",
                              "input": os.path.join(args.out, f"{target}.last")}), flush=True)
            sys.stderr.write(proc.stderr[-4000:])
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else json.dumps({"target": target, "error": proc.stderr[-2000:]}), flush=True)
        if proc.returncode != 0:
            found += 1
            sys.stderr.write(proc.stderr[-8000:])
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
