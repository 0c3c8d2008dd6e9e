"""The demo's wall time and each rule's share: the embedded default (config/config.yaml) run
end to end in a fresh directory, as `make demo` runs it (install excluded).

Shares come from Snakemake's own log: for each job, the time from its start line to its
"Finished job" line; per rule, the sum over its jobs (job-seconds: with --cores 2 two jobs
run at once, so the shares add up to about twice the wall time). ``timeline`` lists every
job as [rule, start s, end s] from the first job's start: the critical path and the idle
cores can be read from it.

    PYTHONPATH=src python benchmarks/demo.py --out demo.json
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import emit

from mice2machines import settings

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def timeline(log: str) -> list[dict]:
    """Each finished job of a Snakemake log: rule, start and end (datetimes), in start order."""
    start, rule_of, out = {}, {}, []
    stamp = rule = None
    for line in log.splitlines():
        m = STAMP.match(line.strip())
        if m:
            stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        s = line.strip()
        if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
            rule = s.split()[1].rstrip(":")
        elif s.startswith("jobid:") and rule is not None:
            jid = s.split()[1]
            start[jid], rule_of[jid] = stamp, rule
            rule = None
        elif s.startswith("Finished job") or s.startswith("Finished jobid"):
            jid = re.findall(r"\d+", s)[0]
            if jid in start:
                out.append({"rule": rule_of[jid], "start": start[jid], "end": stamp})
    return sorted(out, key=lambda j: j["start"])


def job_seconds(log: str) -> dict[str, list[float]]:
    """rule -> seconds of each of its jobs, from a Snakemake log."""
    out = collections.defaultdict(list)
    for j in timeline(log):
        out[j["rule"]].append((j["end"] - j["start"]).total_seconds())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="run in this directory (kept) instead of a temporary one")
    ap.add_argument("--out")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="m2m-demo-"))
    (work / "config").mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "config").iterdir():
        if f.is_file():
            shutil.copy(f, work / "config" / f.name)
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores"]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, str(a.cores)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    jobs = job_seconds(proc.stderr)
    total = sum(sum(v) for v in jobs.values())
    rules = {
        r: {"jobs": len(v), "job_s": round(sum(v), 1), "share": round(sum(v) / total, 3)}
        for r, v in sorted(jobs.items(), key=lambda kv: -sum(kv[1]))
    }
    config = settings.validate_config(yaml.safe_load((work / "config" / "config.yaml").read_text()))
    results = work / config["results_dir"]
    size = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
    jobs_in_order = timeline(proc.stderr)
    t0 = jobs_in_order[0]["start"] if jobs_in_order else None
    out = {
        "wall_s": round(wall, 1),
        "job_s": round(total, 1),
        "jobs": sum(len(v) for v in jobs.values()),
        "timeline": [
            [j["rule"], (j["start"] - t0).total_seconds(), (j["end"] - t0).total_seconds()]
            for j in jobs_in_order
        ],
    }
    emit({**out, "results_mb": round(size / 2**20, 1), "rules": rules}, a.out)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
