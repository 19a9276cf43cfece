"""Compress on a dask.distributed cluster: local worker processes, or a scheduler you run.

    python examples/run_on_cluster.py scan.tif scan.zarr                 # 2 local processes
    python examples/run_on_cluster.py scan.tif scan.zarr tcp://head:8786  # an existing cluster

With an existing cluster, the workers open the source by path themselves:
scan.tif and scan.zarr must be on a filesystem every worker sees at the same path.
"""

from __future__ import annotations

import logging
import sys

from distributed import Client, LocalCluster

import bigquant


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if len(sys.argv) > 3:
        client = Client(sys.argv[3], timeout="10s")
    else:
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    with client:
        print("dashboard:", client.dashboard_link)
        meta = bigquant.compress(src, dst, 256, client=client, overwrite=True)
    print(f"{dst}: {meta.n_colors} colours, PSNR {meta.psnr:.2f} dB")


if __name__ == "__main__":
    main()
