"""How long loading (and reloading on SIGHUP) a big inventory takes.

Builds the shipped example (config/sites.yaml) plus a billing CSV of N generated subscribers, all
in 127.0.0.0/8, in a temp folder, then times ``load_inventory`` and ``summarize``.

    .venv/bin/python -m bench.inventory.run [N ...]      # default: 5000 20000 50000

Max RSS is the whole process high-water mark (it includes the earlier, smaller runs).
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from monitor.inventory.loader import load_inventory, summarize

ROOT = Path(__file__).resolve().parents[2]
PARENTS = ("ap-centro-1", "ap-centro-2", "olt-arauca", "ap-tame-1", "olt-saravena", "ap-fortul-2")


def build(folder: Path, n: int) -> Path:
    shutil.copytree(ROOT / "config" / "secrets", folder / "secrets")
    text = (ROOT / "config" / "sites.yaml").read_text().replace("customers_file: customers.csv",
                                                                "customers_file: big.csv")
    (folder / "sites.yaml").write_text(text)
    with (folder / "big.csv").open("w") as fh:
        fh.write("customer_id,name,service_class,email,phone,language,notify,endpoint_id,endpoint_kind,"
                 "address,parent\n")
        for i in range(n):
            a = (10 << 16) + i  # 127.10.0.0 upwards: clear of the example's own addresses
            fh.write(f"R-{i},Cliente {i},residencial,c{i}@example.com,+57 300 555 0000,es,,cpe-{i},cpe,"
                     f"127.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255},{PARENTS[i % len(PARENTS)]}\n")
    return folder / "sites.yaml"


def main(sizes: list[int]) -> None:
    print(f"{'endpoints':>10} {'load s':>8} {'µs/target':>10} {'summary s':>10} {'max RSS MB':>11}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = build(Path(tmp), n)
            t0 = time.perf_counter()
            inv = load_inventory(path, env={})
            t1 = time.perf_counter()
            summarize(inv)
            t2 = time.perf_counter()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{len(inv.endpoints()):>10} {t1 - t0:>8.2f} {(t1 - t0) / len(inv.targets) * 1e6:>10.1f} "
                  f"{t2 - t1:>10.3f} {rss:>11.0f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5000, 20000, 50000])
