"""`accelerate launch --cpu --num_processes N` on one machine: N processes over gloo, as the command says.

Why this exists
- accelerate 1.16 sends every `--cpu` launch to its simple launcher, which starts the script **once**; it only
  honours `--num_processes` through `mpirun` (with `--mpirun_hostfile` and an MPI installation). The one process
  it starts gets `ACCELERATE_USE_CPU=True` and, because more than one process was asked for, `MASTER_ADDR` and
  `MASTER_PORT`, but neither a rank nor a world size (read from accelerate's `prepare_simple_launcher_cmd_env`).
- `join_cpu_launch()` recognises that process. It reads the `accelerate launch` command line of its parent
  process with accelerate's own argument parser, and starts the same training script again through accelerate's
  multi-process launcher (`accelerate launch --multi_gpu`, i.e. torchrun, which does not need GPUs) with the asked
  number of processes and threads per process; the processes join over gloo on the CPU (`Accelerator(cpu=True)`).
  The first process waits for them and exits with their exit status, so nothing is trained or recorded twice.
- Under `mpirun` (`--mpirun_hostfile`) the processes carry MPI's rank variables instead of `RANK`;
  `mpi_rank_world()` reads them in the order accelerate's `get_cpu_distributed_information` does.
- When the parent's command line cannot be read, the run stops with a usage error naming the command that works
  (`--multi_gpu ... --device cpu`) instead of silently training in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from skillweave.errors import ConfigError

RELAUNCHED = "SKILLWEAVE_CPU_LAUNCH"  # set in the processes started by join_cpu_launch (no second relaunch)
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
WORKING = ("accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no "
           "--dynamo_backend no -m skillweave ... --device cpu")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "y", "on")


def cpu_launch() -> bool:
    """True under `accelerate launch --cpu` (any number of processes) or a process started by join_cpu_launch."""
    return _flag("ACCELERATE_USE_CPU") or _flag(RELAUNCHED)


def mpi_rank_world() -> tuple[int, int] | None:
    """(rank, world size) from MPI's variables (`accelerate launch --cpu --mpirun_hostfile`), None without them."""
    for rank_var, size_var in zip(RANK_VARS, SIZE_VARS, strict=True):
        if os.environ.get(size_var, "").isdigit():
            return int(os.environ.get(rank_var, "0") or 0), int(os.environ[size_var])
    return None


def _lone_cpu_process() -> bool:
    """This process is the only one a multi-process `accelerate launch --cpu` started on this machine."""
    return (_flag("ACCELERATE_USE_CPU") and not _flag(RELAUNCHED) and "MASTER_ADDR" in os.environ
            and "RANK" not in os.environ and "WORLD_SIZE" not in os.environ and mpi_rank_world() is None)


def launch_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after `accelerate launch` in a command line (console script or `-m`), else None."""
    for k, word in enumerate(argv):
        base = os.path.basename(word)
        if base in ("accelerate-launch", "accelerate.commands.launch"):
            return argv[k + 1:]
        if base in ("accelerate", "accelerate.commands.accelerate_cli") and argv[k + 1:k + 2] == ["launch"]:
            return argv[k + 2:]
    return None


def parse_launch(argv: list[str]) -> Any:
    """accelerate's own reading of an `accelerate launch` argument list (num_processes from a config file too)."""
    from accelerate.commands.launch import launch_command_parser

    args = launch_command_parser().parse_args(argv)
    if args.num_processes is None and args.config_file:
        from accelerate.commands.config.config_args import load_config_from_file

        args.num_processes = load_config_from_file(args.config_file).num_processes
    return args


def relaunch_command(args: Any, port: str) -> list[str]:
    """`accelerate launch --multi_gpu` (torchrun) for the same script, processes and threads as the --cpu launch."""
    threads = args.num_cpu_threads_per_process or os.environ.get("OMP_NUM_THREADS") or 1
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(args.num_processes), "--num_machines", "1",
               "--mixed_precision", args.mixed_precision or "no", "--dynamo_backend", "no",
               "--main_process_port", str(args.main_process_port or port), "--num_cpu_threads_per_process",
               str(threads)]
    if args.module:
        command.append("--module")
    if args.no_python:
        command.append("--no_python")
    return [*command, args.training_script, *args.training_script_args]


def join_cpu_launch() -> None:
    """Turn the one process of `accelerate launch --cpu --num_processes N` (N > 1) into N processes.

    Returns at once in every other situation. Otherwise it runs the launch again as N processes and ends this
    process with their exit status (SystemExit), or raises ConfigError when the launch cannot be read.
    """
    if not _lone_cpu_process():
        return
    try:
        import psutil

        args = parse_launch(launch_arguments(psutil.Process(os.getppid()).cmdline()) or [])
    except (Exception, SystemExit) as exc:  # argparse exits on a command line it cannot read
        raise ConfigError(f"`accelerate launch --cpu` asked for several processes but started one, and its command "
                          f"line could not be read ({type(exc).__name__}); use: {WORKING}") from None
    if (args.num_machines or 1) > 1 or args.mpirun_hostfile:
        raise ConfigError("`accelerate launch --cpu` over several machines needs --mpirun_hostfile and MPI "
                          "(not handled here); on one machine use --num_machines 1")
    if not args.num_processes or args.num_processes < 2:
        return
    env = {**os.environ, RELAUNCHED: "1"}
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # torchrun sets its own
        env.pop(name, None)
    print(f"accelerate launch --cpu: starting {args.num_processes} processes (gloo)", file=sys.stderr, flush=True)
    done = subprocess.run(relaunch_command(args, os.environ.get("MASTER_PORT", "29500")), env=env)
    raise SystemExit(done.returncode)
