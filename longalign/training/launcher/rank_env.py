"""Run a command as one rank of an MPI launch with torch.distributed's variables set.

MPI runtimes (``deepspeed-distributed``) start every rank with ``mpirun``; torch.distributed and
accelerate read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``. This maps Open MPI's per-rank variables onto them, takes the first host of
the hostfile as the rendezvous address, and replaces itself with the command::

    mpirun --hostfile H ... python -m longalign.training.launcher.rank_env --hostfile H -- CMD...
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_FROM_MPI = {
    "RANK": ("OMPI_COMM_WORLD_RANK", "PMI_RANK"),
    "WORLD_SIZE": ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"),
    "LOCAL_RANK": ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"),
    "LOCAL_WORLD_SIZE": ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"),
}


def rank_env(environ: dict[str, str], hostfile: str, port: int) -> dict[str, str]:
    """The torch.distributed variables for this rank (existing values are kept)."""
    out: dict[str, str] = {}
    for name, sources in _FROM_MPI.items():
        value = environ.get(name) or next((environ[s] for s in sources if s in environ), None)
        if value is None:
            raise SystemExit(f"rank_env: none of {', '.join(sources)} is set; run under mpirun")
        out[name] = value
    if environ.get("MASTER_ADDR"):
        out["MASTER_ADDR"] = environ["MASTER_ADDR"]
    else:
        hosts = [line.split()[0] for line in Path(hostfile).read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        if not hosts:
            raise SystemExit(f"rank_env: no host in {hostfile}")
        out["MASTER_ADDR"] = hosts[0]
    out["MASTER_PORT"] = environ.get("MASTER_PORT") or str(port)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostfile", required=True)
    parser.add_argument("--port", type=int, default=29500)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("no command given after --")
    env = {**os.environ, **rank_env(dict(os.environ), opts.hostfile, opts.port)}
    sys.stdout.flush()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
