"""python -m tests.kube.cluster [--state-dir DIR] [--port N] [--no-operator] [--no-dask-crds]

Starts the emulated Kubernetes cluster (API server, process kubelet, real Dask
operator) and runs until Ctrl-C / SIGTERM.  Prints the kubeconfig path."""

import argparse
import asyncio
import json
import logging
import pathlib
import sys
import tempfile

from .runner import serve


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m tests.kube.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=None,
        help="where kubeconfig, logs and pod files go (default: a new temp dir)",
    )
    ap.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    ap.add_argument("--no-operator", action="store_true", help="do not start the Dask operator")
    ap.add_argument(
        "--no-dask-crds",
        action="store_true",
        help="do not serve the Dask CRDs (a cluster without the Dask operator; implies --no-operator)",
    )
    ap.add_argument(
        "--ready-file",
        type=pathlib.Path,
        default=None,
        help="write connection info as JSON here once up (used by the pytest fixture)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    state_dir = args.state_dir or pathlib.Path(tempfile.mkdtemp(prefix="kube-emu-"))
    ready = args.ready_file or (state_dir / "ready.json")

    async def run() -> None:
        task = asyncio.create_task(
            serve(
                state_dir.resolve(),
                port=args.port,
                operator=not args.no_operator,
                dask_crds=not args.no_dask_crds,
                ready_file=ready,
            )
        )
        while not ready.exists() and not task.done():
            await asyncio.sleep(0.1)
        if ready.exists():
            info = json.loads(ready.read_text())
            print(f"KUBECONFIG={info['kubeconfig']}", flush=True)
            print(
                f"# API server {info['api_url']}; state in {info['state_dir']}; "
                f"service names for host processes: {info['hosts_file']} (see tests/kube/README.md)",
                flush=True,
            )
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
