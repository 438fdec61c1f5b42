"""trainers/launch.py without launching anything: reading an `accelerate launch --cpu` command line, the relaunch
command built from it, MPI's rank variables, and the usage error when the launch cannot be read. The real launches
are in tests/test_accelerate_launch_cpu.py and tests/test_multiprocess.py (slow)."""

from __future__ import annotations

import sys

import pytest
import torch

from skillweave.errors import ConfigError
from skillweave.trainers import launch
from skillweave.trainers.devices import process_info

LAUNCH_ENV = ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", launch.RELAUNCHED,
              *launch.RANK_VARS, *launch.SIZE_VARS)


@pytest.fixture()
def clean_env(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("argv", [
    ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "skillweave", "x"],
    ["/venv/bin/python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m", "skillweave", "x"],
    ["/venv/bin/python", "/venv/bin/accelerate-launch", "--cpu", "--num_processes", "2", "-m", "skillweave", "x"],
])
def test_launch_arguments_found_in_every_form_of_the_command(argv):
    assert launch.launch_arguments(argv) == ["--cpu", "--num_processes", "2", "-m", "skillweave", "x"]


def test_no_launch_arguments_in_another_command():
    assert launch.launch_arguments(["/bin/bash", "-c", "skillweave train dpo"]) is None


def test_relaunch_command_keeps_the_script_processes_and_threads():
    args = launch.parse_launch(["--cpu", "--num_processes", "3", "--num_cpu_threads_per_process", "2",
                                "--main_process_port", "29612", "-m", "skillweave", "train", "dpo", "--data", "p.jsonl"])
    command = launch.relaunch_command(args, "29500")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    options = command[3:]
    assert "--cpu" not in options and "--multi_gpu" in options
    assert options[options.index("--num_processes") + 1] == "3"
    assert options[options.index("--num_cpu_threads_per_process") + 1] == "2"
    assert options[options.index("--main_process_port") + 1] == "29612"
    assert options[-6:] == ["--module", "skillweave", "train", "dpo", "--data", "p.jsonl"]


def test_relaunch_port_defaults_to_the_launchers(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "1")
    args = launch.parse_launch(["--cpu", "--num_processes", "2", "run.py"])
    options = launch.relaunch_command(args, "29777")
    assert options[options.index("--main_process_port") + 1] == "29777"
    assert options[-1] == "run.py" and "--module" not in options


def test_mpi_ranks_are_read_when_there_is_no_rank(clean_env):
    assert process_info() == (0, 1)
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "1")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert process_info() == (1, 2)
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "4")  # torchrun's variables win
    assert process_info() == (0, 4)


def test_nothing_happens_outside_a_multi_process_cpu_launch(clean_env):
    launch.join_cpu_launch()  # no accelerate variables
    clean_env.setenv("ACCELERATE_USE_CPU", "True")
    launch.join_cpu_launch()  # `--cpu` with one process: no MASTER_ADDR
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    launch.join_cpu_launch()  # already one of several ranks


def test_an_unreadable_launch_is_a_usage_error_not_one_silent_process(clean_env):
    clean_env.setenv("ACCELERATE_USE_CPU", "True")
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("MASTER_PORT", "29500")
    # the parent of this test process is not `accelerate launch`
    with pytest.raises(ConfigError, match="--multi_gpu --num_processes N"):
        launch.join_cpu_launch()


def test_cuda_under_a_cpu_launch_is_a_usage_error(clean_env):
    from skillweave.trainers.devices import setup

    clean_env.setenv("ACCELERATE_USE_CPU", "True")  # `accelerate launch --cpu` with one process
    with pytest.raises(ConfigError, match="accelerate launch --cpu"):
        setup("cuda:0", "auto")
    assert setup("auto", "auto") == (torch.device("cpu"), torch.float32)
