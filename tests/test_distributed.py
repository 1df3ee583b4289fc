"""Training under torchrun: sharding, collectives over gloo, and whole 2-process runs.

The end-to-end tests start ``torchrun --standalone --nproc_per_node=2 -m octlens train`` on
loopback, as a user would, and compare it with one process on the same global batch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import TINY_VIT
from octlens.data.dataset import OCTDataset
from octlens.data.index import scan
from octlens.data.transforms import Normalization, train_transform
from octlens.errors import OctlensError
from octlens.training import TrainConfig, load_checkpoint, train
from octlens.training.distributed import (
    ProcessGroup,
    check_batch,
    from_environment,
    shard_order,
)
from octlens.training.run import Run
from octlens.training.tune import tune

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# A 2-block ViT (no BatchNorm: a step of 2 processes is then one process's step up to rounding).
VIT = ["--model", "vit_tiny", "--patch-size", "8", "--img-size", "32"]
VIT += ["--model-arg", "embed_dim=32", "--model-arg", "depth=2", "--model-arg", "num_heads=2"]
COMMON = ["--batch-size", "8", "--precision", "fp32", "--device", "cpu", "--workers", "0"]
# Measured: 3e-8 between the two runs' losses (fp32 sums in another order, AdamW over 4 steps).
LOSS_TOLERANCE = 1e-5


@given(
    n=st.integers(1, 200),
    world_size=st.sampled_from([2, 3, 4]),
    per_rank=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
def test_shards_cut_each_global_batch_in_rank_order(n, world_size, per_rank, seed):
    batch = world_size * per_rank
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    shards = [
        shard_order(order, batch, ProcessGroup(rank, world_size), drop_last=True)
        for rank in range(world_size)
    ]
    single = shard_order(order, batch, ProcessGroup(), drop_last=True)
    assert {len(shard) for shard in shards} == {n // batch * per_rank}  # same steps on every rank
    rebuilt = [
        position
        for step in range(n // batch)
        for shard in shards
        for position in shard[step * per_rank : (step + 1) * per_rank]
    ]
    assert rebuilt == (single if n >= batch else [])


def test_one_process_keeps_a_partial_batch_only_when_asked():
    order = list(range(10))
    assert shard_order(order, 4, ProcessGroup(), drop_last=True) == list(range(8))
    assert shard_order(order, 4, ProcessGroup(), drop_last=False) == order
    assert shard_order(order[:3], 4, ProcessGroup(), drop_last=True) == order[:3]


def test_a_global_batch_that_does_not_divide_is_refused():
    check_batch(7, 3, 1, ProcessGroup())  # one process: anything goes
    check_batch(8, 8, 2, ProcessGroup(0, 2))
    with pytest.raises(OctlensError, match=r"^batch_size 6 .* among 4 processes"):
        check_batch(6, 100, 10, ProcessGroup(0, 4))
    with pytest.raises(OctlensError, match="5 training images are fewer than one global batch"):
        check_batch(8, 5, 10, ProcessGroup(0, 2))
    with pytest.raises(OctlensError, match="1 validation images cannot be shared by 2 processes"):
        check_batch(8, 8, 1, ProcessGroup(0, 2))


def test_each_rank_takes_the_gpu_of_its_local_rank():
    group = ProcessGroup(rank=3, world_size=4, local_rank=1)
    assert group.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert group.device(torch.device("cpu")) == torch.device("cpu")
    assert ProcessGroup().device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    with pytest.raises(OctlensError, match=r"^device cuda:1: under torchrun each process"):
        group.device(torch.device("cuda", 1))


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"WORLD_SIZE": "two"}, "must be whole numbers"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 is not a rank of a job of WORLD_SIZE 2"),
        ({"WORLD_SIZE": "0"}, "RANK 0 is not a rank of a job of WORLD_SIZE 0"),
    ],
)
def test_a_malformed_torchrun_environment_is_one_line(monkeypatch, environment, problem):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(OctlensError, match=problem):
        from_environment()


def test_a_stray_world_size_without_torchrun_is_one_line(monkeypatch, tiny_data, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    config = TrainConfig(data=tiny_data, out=tmp_path / "run", img_size=32, epochs=1, device="cpu")
    with pytest.raises(OctlensError, match="WORLD_SIZE=2 is set but MASTER_ADDR and MASTER_PORT"):
        train(config, verbose=False)
    assert not (tmp_path / "run").exists()


def test_tuning_refuses_torchrun_and_says_how_to_share_a_study(monkeypatch, tiny_data, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    base = TrainConfig(data=tiny_data, out=tmp_path / "unused", img_size=32, epochs=1)
    with pytest.raises(OctlensError, match="does not run under torchrun"):
        tune(base, tmp_path / "study", trials=1)
    assert not (tmp_path / "study").exists()


def test_a_scan_is_augmented_alike_whoever_loads_it(tiny_data):
    index = scan(tiny_data)
    dataset = OCTDataset(
        index, index.split("train")[:4], train_transform(32, Normalization(0.2, 0.2), 2.0), 32
    )
    dataset.epoch_seed = 11
    first = [dataset[position][0] for position in range(4)]
    torch.manual_seed(123)  # another process's random state, another loading order
    again = [dataset[position][0] for position in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    dataset.epoch_seed = 12  # the next epoch augments afresh
    assert not all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))


_COLLECTIVES = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from octlens.training.distributed import from_environment, joined, lost_peer

    group = from_environment()
    result = {}
    with joined(group, torch.device("cpu")):
        result["sum"] = group.all_sum([1.0, group.rank])
        rows = torch.arange(3 * (group.rank + 1), dtype=torch.float32).reshape(-1, 3) + group.rank
        result["rows"] = group.gather_rows(rows).tolist()
        norm = nn.BatchNorm1d(2)
        norm.running_mean.fill_(group.rank + 1.0)
        norm.num_batches_tracked.fill_(5)
        group.average_buffers(norm)
        result["mean"] = norm.running_mean.tolist()
        result["tracked"] = int(norm.num_batches_tracked)
        if group.rank == 1:
            os._exit(0)  # gone without a word: rank 0 meets a closed connection
        try:
            group.all_sum([1.0])
        except RuntimeError as error:
            result["lost_peer"] = lost_peer(error)
        with open(sys.argv[1], "w") as handle:
            json.dump(result, handle)
        os._exit(0)  # the group cannot be torn down without its peer
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_collectives_over_gloo_sum_gather_average_and_notice_a_lost_peer(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    port = str(_free_port())
    processes = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        processes.append(
            subprocess.Popen([sys.executable, str(script), str(tmp_path / "result.json")], env=env)
        )
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sum"] == [2.0, 1.0]
    # rank 0's one row then rank 1's two, each rank's values offset by its rank
    assert result["rows"] == [[0, 1, 2], [1, 2, 3], [4, 5, 6]]
    assert result["mean"] == [1.5, 1.5]
    assert result["tracked"] == 5  # counters are left alone
    assert result["lost_peer"] is True


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, "-m", "octlens", "train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run_as_one_process_does(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    args = ["--data", str(tiny_data), "--out", str(run), *VIT, *COMMON, "--seed", "3"]
    first = _torchrun(*args, "--epochs", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("2 processes (gloo): global batch 8, 4 per process") == 1
    assert first.stdout.count("best epoch") == 1  # rank 0 reports, once
    # a finished run resumed has nothing left to do (a killed one goes on: the test below)
    resumed = _torchrun(*args, "--epochs", "2", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("best epoch") == 1

    single = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path / "single",
            model="vit_tiny",
            patch_size=8,
            img_size=32,
            model_kwargs=TINY_VIT,
            batch_size=8,
            precision="fp32",
            device="cpu",
            num_workers=0,
            seed=3,
            epochs=2,
        ),
        verbose=False,
    )
    ddp_history = load_checkpoint(run / "last.safetensors").meta["history"]
    assert len(ddp_history) == 2
    for ours, theirs in zip(ddp_history, single.history, strict=True):
        for metric in ("train_loss", "val_loss"):
            assert ours[metric] == pytest.approx(theirs[metric], abs=LOSS_TOLERANCE)
        assert ours["val_acc"] == theirs["val_acc"]

    # One writer: one set of files, and weights that load in a single process as they are.
    assert sorted(path.name for path in run.iterdir()) == sorted(
        path.name for path in (tmp_path / "single").iterdir()
    )
    names = list(load_checkpoint(run / "best.safetensors").tensors)
    assert names and not [name for name in names if "module." in name]  # no DDP wrapper's prefix
    Run.load(run).model()


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _rank_of(pid: int) -> int | None:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_job_with_one_line_and_a_resumable_last(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    args = ["--data", str(tiny_data), "--out", str(run), "--model", "resnet18"]
    args += ["--img-size", "32", "--epochs", "100", *COMMON]
    job = subprocess.Popen(
        [*TORCHRUN, "-m", "octlens", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.time() + 240
    while not (run / "last.json").exists():
        assert job.poll() is None, job.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    (victim,) = [pid for pid in _child_pids(job.pid) if _rank_of(pid) == 1]
    os.kill(victim, signal.SIGKILL)
    _, err = job.communicate(timeout=120)

    assert job.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith(f"error: {run}: ")]
    assert len(ours) == 1, err[-3000:]  # rank 0's diagnosis; the killed rank says nothing
    assert "(last.safetensors); relaunch the same command with --resume" in ours[0]
    assert not re.search(r'File ".*/octlens/', err)  # no traceback from octlens' own code

    saved = load_checkpoint(run / "last.safetensors").meta["history"]
    assert len(saved) >= 1
    # the DDP run goes on in a single process, from its last epoch (stopped after one more)
    config = TrainConfig.model_validate(json.loads((run / "config.json").read_text()))

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        train(config, resume=True, verbose=False, on_epoch=stop)
    history = load_checkpoint(run / "last.safetensors").meta["history"]
    assert len(history) == len(saved) + 1
    assert history[: len(saved)] == saved
