#!/usr/bin/env python3
"""Makes release N+1 from release N for the delta benchmark (scripts/bench-delta.sh).

    delta-variant.py N_DIR OUT_DIR VARIANT

Copies N_DIR to OUT_DIR (which must not exist) and changes it as VARIANT says:
  change1, change5, change20   1, 5 or 20 % of the regular files changed in place
                               (64 bytes in the middle of each, same length)
  add-middle                   1 % more small files (2-8 KiB), named to sort into the
                               middle of the tree, so the packed files after them shift
  rename                       the largest library renamed (content unchanged)
  insert                       4 KiB inserted at 10 % of the largest file
Prints one JSON object: the variant, the files changed (added, renamed and removed
count), and their bytes in N+1 ("changed_bytes": what a host holding N must fetch at
most, plus 64 KiB per changed file). Deterministic: the same N and variant give the same
tree.
"""
import json
import os
import random
import shutil
import sys


def regular_files(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, out, variant = sys.argv[1:]
    shutil.copytree(src, out, symlinks=True)
    files = regular_files(out)
    rng = random.Random(f"swarmfs-delta-{variant}")
    changed, changed_bytes = [], 0
    if variant in ("change1", "change5", "change20"):
        pct = int(variant[len("change"):])
        n = max(1, len(files) * pct // 100)
        for rel in sorted(rng.sample(files, n)):
            p = os.path.join(out, rel)
            size = os.path.getsize(p)
            if size == 0:
                continue
            at = max(0, size // 2 - 32)
            with open(p, "r+b") as f:
                f.seek(at)
                b = f.read(64)
                f.seek(at)
                f.write(bytes(x ^ 0xFF for x in b))
            changed.append(rel)
            changed_bytes += size
    elif variant == "add-middle":
        small = sorted(f for f in files if os.path.getsize(os.path.join(out, f)) < 32 << 10)
        mid = os.path.dirname(small[len(small) // 2]) if small else "."
        for i in range(max(1, len(files) // 100)):
            rel = os.path.join(mid, f"aaa-new-{i:04d}.txt")
            size = rng.randint(2 << 10, 8 << 10)
            with open(os.path.join(out, rel), "wb") as f:
                f.write(rng.randbytes(size))
            changed.append(rel)
            changed_bytes += size
    elif variant == "rename":
        libs = [f for f in files if f.startswith("lib/")] or files
        big = max(libs, key=lambda f: os.path.getsize(os.path.join(out, f)))
        new = big + ".renamed"
        os.rename(os.path.join(out, big), os.path.join(out, new))
        changed.append(new)
    elif variant == "insert":
        big = max(files, key=lambda f: os.path.getsize(os.path.join(out, f)))
        p = os.path.join(out, big)
        with open(p, "rb") as f:
            b = f.read()
        at = len(b) // 10
        b = b[:at] + rng.randbytes(4096) + b[at:]
        with open(p, "wb") as f:
            f.write(b)
        changed.append(big)
        changed_bytes += len(b)
    else:
        sys.exit(f"unknown variant {variant!r}")
    print(json.dumps({"variant": variant, "changed_files": len(changed),
                      "changed_bytes": changed_bytes, "files": len(files)}))


if __name__ == "__main__":
    main()
