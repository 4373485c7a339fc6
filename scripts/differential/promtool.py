#!/usr/bin/env python3
"""promtool and lookout side by side on real-world rule files and unit tests.

Runs `promtool check rules` / `promtool test rules` (Debian's promtool, the oracle) and
`lookout rules check` / `lookout rules test` on every file of the ecosystem corpus
(`shared/ecosystem/MANIFEST`: 450 rule files and 216 promtool unit-test files from public
repositories), each in the file's own folder as its repository's CI does, and compares the
exit code, standard output and standard error of the two.

Any difference fails the run unless `tests/differential/promtool-ecosystem.expected` lists
the file with the reason (a deliberate difference, named in the README's Differences table).
An expected difference that no longer occurs fails too, so the list stays true.

    scripts/differential/promtool.py --lookout target/release/lookout [--jobs 2] [--only REGEX]

The corpus is found at $LOOKOUT_ECOSYSTEM, or at ../shared/ecosystem beside the checkout.
"""
import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = os.path.join(ROOT, "tests", "differential", "promtool-ecosystem.expected")
# Per-folder arguments for lookout: the promtool generation a repository's tests are written
# for (its own CI's), e.g. Prometheus 2 window semantics.
ARGS = os.path.join(ROOT, "tests", "differential", "promtool-ecosystem.args")


def corpus_dir():
    env = os.environ.get("LOOKOUT_ECOSYSTEM")
    if env:
        return env
    return os.path.join(os.path.dirname(ROOT), "shared", "ecosystem")


def read_manifest(base):
    items = []
    with open(os.path.join(base, "MANIFEST"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, path = line.split(None, 1)
            items.append((kind, path))
    return items


def read_expected():
    """path -> (what, reason): what is the difference expected on that file."""
    out = {}
    with open(EXPECTED, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                sys.exit(f"{EXPECTED}:{n}: want three tab-separated fields: path, what, reason")
            out[parts[0]] = (parts[1], parts[2])
    return out


def read_args():
    """[(path prefix, [arguments])], longest prefix first."""
    out = []
    if not os.path.exists(ARGS):
        return out
    with open(ARGS, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                sys.exit(f"{ARGS}:{n}: want three tab-separated fields: path prefix, arguments, why")
            out.append((parts[0], parts[1].split()))
    return sorted(out, key=lambda p: -len(p[0]))


def lookout_args(path, table):
    for prefix, extra in table:
        if path.startswith(prefix):
            return extra
    return []


def run(cmd, cwd, timeout):
    started = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "NO_COLOR": "1"})
        return p.returncode, p.stdout, p.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired:
        return "timeout", "", "", time.monotonic() - started


def compare(kind, path, args, base):
    folder = os.path.join(base, "corpus", os.path.dirname(path))
    name = os.path.basename(path)
    verb = "check" if kind == "check" else "test"
    prom = run(["promtool", verb, "rules", name], folder, args.timeout)
    extra = lookout_args(path, args.extra_args) if verb == "test" else []
    look = run([args.lookout, "rules", verb, *extra, name], folder, args.timeout)
    diffs = []
    if prom[0] != look[0]:
        diffs.append("exit")
    if prom[1] != look[1]:
        diffs.append("stdout")
    if prom[2] != look[2]:
        diffs.append("stderr")
    return kind, path, prom, look, diffs


def excerpt(text, limit=1200):
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + " …"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lookout", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", help="regex on the corpus path")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    args.lookout = os.path.abspath(args.lookout)
    base = corpus_dir()
    if not os.path.isdir(base):
        sys.exit(f"ecosystem corpus not found at {base} (set LOOKOUT_ECOSYSTEM)")
    items = read_manifest(base)
    if args.only:
        items = [i for i in items if re.search(args.only, i[1])]
    expected = read_expected()
    args.extra_args = read_args()
    unexpected, resolved, listed = [], [], 0
    totals = {"promtool": 0.0, "lookout": 0.0}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(compare, k, p, args, base) for k, p in items]
        for fut in futures:
            kind, path, prom, look, diffs = fut.result()
            totals["promtool"] += prom[3]
            totals["lookout"] += look[3]
            exp = expected.get(path)
            if diffs and exp:
                listed += 1
                continue
            if exp and not diffs:
                resolved.append(path)
                continue
            if diffs:
                unexpected.append((kind, path, prom, look, diffs))
    for kind, path, prom, look, diffs in unexpected:
        print(f"DIFFERENT ({', '.join(diffs)}): {kind} {path}")
        print(f"  promtool exit {prom[0]}:\n    " + excerpt(prom[1] + prom[2]).replace("\n", "\n    "))
        print(f"  lookout exit {look[0]}:\n    " + excerpt(look[1] + look[2]).replace("\n", "\n    "))
    for path in resolved:
        print(f"NO LONGER DIFFERENT (remove it from {os.path.relpath(EXPECTED, ROOT)}): {path}")
    same = len(items) - len(unexpected) - listed - len(resolved)
    print(f"ecosystem: {len(items)} files, {same} identical, {listed} listed differences, "
          f"{len(unexpected)} unexpected, {len(resolved)} listed but now identical; "
          f"time promtool {totals['promtool']:.1f}s, lookout {totals['lookout']:.1f}s")
    failed = len(unexpected) + len(resolved)
    print(f"ecosystem: {len(items) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
