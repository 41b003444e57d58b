"""Run one `resnet-deploy` command in this process with torch.compile's cache artifacts loaded
before it and saved after it (torch >= 2.7: torch.compiler.load_cache_artifacts /
save_cache_artifacts, the "mega-cache": inductor's FX graphs, Triton kernels, autotuning).

    python benchmarks/gpu/compile_cache.py [--load FILE]... [--save FILE]... -- bench --engine torch-compile ...

--load files that do not exist are skipped (the first run has none); --save writes the
gzipped artifacts of everything compiled in this process (also after Ctrl-C / SIGTERM / the
command's own error exit), to every FILE given. The exit status is the command's.
A later run that loads them compiles from the cache: inductor's FX graph cache keys on the
graph, torch and Triton versions and the device, so the same torch build on the same GPU hits.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _info(info) -> dict:
    """CacheInfo as {kind: count} (its fields differ between torch releases)."""
    if info is None:
        return {}
    out = {}
    for k, v in vars(info).items():
        if isinstance(v, dict):  # torch >= 2.8: artifacts by type
            out.update({str(t): len(x) for t, x in v.items()})
        elif isinstance(v, (list, tuple)):
            out[k] = len(v)
    return out


def read_packed(p: Path) -> bytes | None:
    """The gzipped artifacts at ``p``; ``None`` where there are none."""
    return p.read_bytes() if p.is_file() else None


def load(paths: list[Path]) -> None:
    import torch

    for p in paths:
        packed = read_packed(p)
        if packed is None:
            print(f"compile cache: {p} not there (nothing loaded)", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            info = torch.compiler.load_cache_artifacts(gzip.decompress(packed))
        except Exception as e:  # noqa: BLE001 - a cache from another torch is skipped, never fatal
            print(f"compile cache: {p} not loaded: {type(e).__name__}: {e}", flush=True)
            continue
        print(f"compile cache: loaded {p} ({len(packed) / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s: "
              f"{json.dumps(_info(info))}", flush=True)


def save(paths: list[Path]) -> None:
    if not paths:
        return
    import torch

    t0 = time.perf_counter()
    try:
        got = torch.compiler.save_cache_artifacts()
    except Exception as e:  # noqa: BLE001
        print(f"compile cache: not saved: {type(e).__name__}: {e}", flush=True)
        return
    if not got or not got[0]:
        print("compile cache: nothing was compiled in this process (nothing saved)", flush=True)
        return
    data, info = got
    packed = gzip.compress(data, 6)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(packed)
        tmp.replace(p)
    print(f"compile cache: saved {len(data) / 2**20:.1f} MiB ({len(packed) / 2**20:.1f} MiB gzipped) in "
          f"{time.perf_counter() - t0:.1f} s to {', '.join(map(str, paths))}: {json.dumps(_info(info))}", flush=True)


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print("usage: compile_cache.py [--load FILE]... [--save FILE]... -- COMMAND ARGS...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", action="append", type=Path, default=[])
    ap.add_argument("--save", action="append", type=Path, default=[])
    args = ap.parse_args(argv[:cut])
    load(args.load)
    from resnet_deploy.cli import main as cli_main

    sys.argv = ["resnet-deploy", *argv[cut + 1:]]
    code = 0
    try:
        cli_main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    finally:
        save(args.save)
    return code


if __name__ == "__main__":
    sys.exit(main())
