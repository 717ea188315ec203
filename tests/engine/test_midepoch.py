"""The parts of mid-epoch checkpoints, in-process: the sampler that starts a pass part-way, the
naming / order / retention of mid-epoch files, where a resumed run continues, the one all-reduce
that carries the loss check and the stop flags, and the interrupts with real signals."""

import os
import signal

import pytest
import torch

from videoattn.data.samplers import ResumableDistributedSampler
from videoattn.engine import checkpoint as ck
from videoattn.train.meter import Clock, Meter
from videoattn.train.midepoch import Interrupts, capture_part, continue_epoch, resume_iteration
from videoattn.utils.distributed import DistInfo
from videoattn.utils.outputs import claim_outputs
from videoattn.utils.preemption import REQUEUE_EXIT_CODE, TERMINATED_EXIT_CODE


def test_sampler_skips_the_first_indices_of_the_same_permutation_for_one_pass():
    data = list(range(23))
    whole = ResumableDistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=5)
    resumed = ResumableDistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=5)
    whole.set_epoch(3)
    order = list(whole)
    assert sorted(order) != order and len(order) == 12  # shuffled, padded to 12 per rank
    resumed.set_epoch(3, skip=8)
    assert len(resumed) == 4 and list(resumed) == order[8:]
    assert len(resumed) == 12 and list(resumed) == order  # the next pass (precise BN) is whole
    resumed.set_epoch(4)
    whole.set_epoch(4)
    assert list(resumed) == list(whole) != order
    with pytest.raises(ValueError, match="cannot skip 13 of the 12"):
        resumed.set_epoch(4, skip=13)


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = os.path.dirname(os.path.dirname(path))
    claim_outputs(out, ck.TOOL, [ck.checkpoint_name(path)])  # as train_net does: its own, prunable
    ck.save_checkpoint(path, {"model_state": {}, "epoch": 0})


def test_mid_epoch_files_order_between_epoch_files_and_are_pruned_once_superseded(tmp_path):
    out = str(tmp_path)
    e1, e2 = ck.epoch_checkpoint_path(out, 1), ck.epoch_checkpoint_path(out, 2)
    m2, m3a, m3b = (
        ck.mid_epoch_checkpoint_path(out, 2, 40),
        ck.mid_epoch_checkpoint_path(out, 3, 8),
        ck.mid_epoch_checkpoint_path(out, 3, 120),
    )
    assert os.path.basename(m3a) == "checkpoint_epoch_00003_iter_000008.pyth"
    for p in (m3b, e1, m2, e2, m3a):
        _touch(p)
    assert ck.list_checkpoints(out) == [((1, 0), e1), ((1, 40), m2), ((2, 0), e2), ((2, 8), m3a), ((2, 120), m3b)]
    assert ck.list_epoch_checkpoints(out) == [(1, e1), (2, e2)]  # what tools/test_net.py picks from
    assert ck.find_last_checkpoint(out)[0] == m3b
    with open(m3b, "wb") as f:
        f.write(b"truncated")
    assert ck.find_last_checkpoint(out)[0] == m3a  # a broken newest file is skipped
    removed = ck.prune_checkpoints(out, keep_last=1)
    assert sorted(removed) == sorted([e1, m2])  # keep_last counts epoch files only; m3b is not complete
    assert [p for _, p in ck.list_checkpoints(out)] == [e2, m3a, m3b]
    _touch(ck.epoch_checkpoint_path(out, 3))
    assert ck.prune_checkpoints(out, keep_last=0) == [m3a]  # superseded even when every epoch file is kept
    assert os.path.exists(m3b)  # unreadable: neither counted nor deleted


def test_resume_iteration_exact_or_by_clips_when_the_world_size_changed():
    parts = [{"rank": 0}, {"rank": 1}]
    pos = {"epoch": 2, "iteration": 6, "world_size": 2, "batch_size": 4, "ranks": parts}
    info = DistInfo(1, 2, 1, torch.device("cpu"))
    assert resume_iteration(pos, info, 4, 2, 10, "ck") == (6, parts[1])
    assert resume_iteration(None, info, 4, 2, 10, "ck") == (0, None)
    four = DistInfo(3, 4, 3, torch.device("cpu"))  # 48 clips done = 3 iterations of 4 x 4: floor to 2 updates
    assert resume_iteration(pos, four, 4, 2, 10, "ck") == (2, None)
    end = {**pos, "iteration": 10}  # the whole epoch done: its end, never past it
    assert resume_iteration(end, DistInfo(0, 1, 0, torch.device("cpu")), 4, 3, 9, "ck") == (9, None)


def test_one_all_reduce_carries_the_loss_check_and_the_flags():
    m = Meter(torch.device("cpu"))
    m.add(loss_sum=torch.tensor(2.5), clips=4)
    assert m.all_finite_and_max("loss_sum", 2, 0) == (True, [2, 0])
    m.add(loss_sum=torch.tensor(float("nan")))
    assert m.all_finite_and_max("loss_sum") == (False, []) and not m.all_finite("loss_sum")


def test_partial_sums_clock_and_rng_come_back_where_the_epoch_stopped():
    sums, clock = Meter(torch.device("cpu")), Clock()
    sums.add(loss_sum=torch.tensor(3.0), correct=torch.tensor(1), clips=6, batches=3)

    class Loader:
        generator = torch.Generator().manual_seed(7)

    torch.manual_seed(11)
    part = capture_part(sums, clock, [("a.mp4", "bad")], Loader)
    expected = torch.rand(3)
    Loader.generator.manual_seed(0)
    torch.manual_seed(0)
    fresh, fresh_clock = Meter(torch.device("cpu")), Clock()
    assert continue_epoch(part, fresh, fresh_clock, Loader) == [("a.mp4", "bad")]
    assert torch.equal(torch.rand(3), expected)  # the same draws as where it stopped
    assert torch.equal(Loader.generator.get_state(), torch.Generator().manual_seed(7).get_state())
    assert fresh.read() == sums.read()
    assert fresh_clock.elapsed()[0] >= part["clock"][0]
    assert continue_epoch(None, fresh, fresh_clock, Loader) == []


def test_interrupts_with_real_signals_timer_and_exit_codes():
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    before = signal.getsignal(signal.SIGUSR1)
    with Interrupts(0.0, info) as it:
        assert it.flags() == (0, 0) and it.decide(0, 0) == (False, False)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal: only a flag is set
        level, _ = it.flags()
        assert it.decide(level, 0) == (True, True) and it.handler.exit_code == TERMINATED_EXIT_CODE
        os.kill(os.getpid(), signal.SIGUSR1)  # the time-limit warning wins: requeue
        assert it.stop_requested() and it.handler.exit_code == REQUEUE_EXIT_CODE
        raise it.stopped("in epoch 1 at iteration 2/6", "ck.pyth")
    assert it.exit_code == REQUEUE_EXIT_CODE and signal.getsignal(signal.SIGUSR1) == before
    with Interrupts(0.0, info) as it:  # SIGUSR2 (an old NCCL takes USR1): requeue too
        os.kill(os.getpid(), signal.SIGUSR2)
        assert it.stop_requested() and it.handler.exit_code == REQUEUE_EXIT_CODE
    timed = Interrupts(1.0, info)  # train.checkpoint_period_minutes=1
    assert timed.flags() == (0, 0)
    timed.last_save -= 61  # a minute and a bit later
    assert timed.flags() == (0, 1) and timed.decide(0, 1) == (False, True)
    timed.saved()
    assert timed.flags() == (0, 0)
    other = Interrupts(1.0, DistInfo(1, 2, 1, torch.device("cpu")))
    other.last_save -= 61
    assert other.flags() == (0, 0)  # rank 0's clock decides for all
    with pytest.raises(KeyError), Interrupts(0.0, info):
        raise KeyError("other errors pass")
