"""Where a worker's time goes: one worker under a closed-loop flood of one message shape,
sampled by py-spy (not a dependency: ``pip install py-spy``).

    python -m bench.profile_worker [--per 1] [--records 60000] [--seconds 15] [--out FILE]

Prints py-spy's top functions (self time, all threads) and writes a speedscope JSON if asked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.common import (Counter, create_topics, free_port, log, produce_all, records_messages, scorer_worker,
                     topic_env, wait_partitions)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per", type=int, default=1)
    ap.add_argument("--records", type=int, default=60000)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--env", nargs="*", default=[], help="extra worker settings NAME=VALUE")
    args = ap.parse_args()
    from ja4_dev.tansu import TansuBroker

    from bench.run import train_bundle

    work = Path(tempfile.mkdtemp(prefix="ja4-prof-"))
    broker = TansuBroker(free_port(), log_path=work / "tansu.log").start()
    try:
        store, infos, traffic = train_bundle(work / "models", 8000)
        suffix = uuid.uuid4().hex[:6]
        env = topic_env(broker.bootstrap, suffix, store.root, **dict(e.split("=", 1) for e in args.env))
        create_topics(broker.bootstrap, [env["TOPIC_FEATURES"], env["TOPIC_SCORES"], env["TOPIC_DLQ"]])
        create_topics(broker.bootstrap, [env["TOPIC_CONTROL"]], partitions=1)
        w = scorer_worker(env, work).start()
        try:
            wait_partitions([w])
            counter = Counter(broker.bootstrap, env["TOPIC_SCORES"])
            recs = (traffic * (args.records // len(traffic) + 1))[:args.records]
            msgs = records_messages(recs, args.per, key_prefix="p-")
            th = threading.Thread(target=produce_all, args=(broker.bootstrap, env["TOPIC_FEATURES"], msgs), daemon=True)
            t0 = time.perf_counter()
            th.start()
            time.sleep(1.5)
            cmd = ["py-spy", "record", "--pid", str(w.proc.pid), "--duration", str(int(args.seconds)),
                   "--threads", "--gil", "--rate", "200", "--format", "speedscope" if args.out else "raw",
                   "-o", args.out or str(work / "prof.txt")]
            subprocess.run(cmd, check=False, capture_output=True)
            top = subprocess.run(["py-spy", "dump", "--pid", str(w.proc.pid)], capture_output=True, text=True)
            counter.wait_count(len(recs), 120)
            el = time.perf_counter() - t0
            log(f"{counter.count} scored in {el:.1f}s = {counter.count / el:.0f} rec/s")
            if not args.out:
                _summarise(work / "prof.txt")
            counter.close()
        finally:
            w.stop()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _summarise(path: Path, n: int = 40) -> None:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    from collections import Counter as C

    self_c, incl = C(), C()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        c = int(cnt)
        frames = stack.split(";")
        total += c
        self_c[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    print(f"total samples {total}")
    print("-- self --")
    for f, c in self_c.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f[:150]}")
    print("-- inclusive --")
    for f, c in incl.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f[:150]}")


if __name__ == "__main__":
    main()
