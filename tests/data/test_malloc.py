"""tune_malloc: freed clip-sized blocks stay in the heap (no page faults next clip) in loader workers."""
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")  # no call: it would tune pytest

PROBE = textwrap.dedent("""
    import sys, torch
    from videoattn.utils.malloc import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
    x = torch.ones(40 << 20, dtype=torch.uint8)   # a 40 MiB batch-sized block (over glibc's 32 MiB adaptive limit), touched
    held = rss()
    del x
    print(held - rss())                            # MiB handed back to the kernel by the free
""")


def _returned_by_free(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@GLIBC
@pytest.mark.slow
def test_freed_block_is_kept_for_reuse_only_when_tuned():
    assert _returned_by_free("default") > 30   # glibc default: a 40 MiB block is mmapped, then unmapped
    assert _returned_by_free("tuned") < 4      # tuned: it stays in the heap for the next clip


@GLIBC
def test_loader_workers_are_tuned(synthetic_root, tmp_path):
    from data_helpers import small_cfg
    from videokit import loader_for  # build_loader as the trainer and the tools call it

    probe = tmp_path / "probe.txt"

    class Probe(torch.utils.data.Dataset):
        split = "val"

        def __len__(self):
            return 2

        def __getitem__(self, i):
            x = torch.ones(40 << 20, dtype=torch.uint8)
            before = _rss()
            del x
            probe.write_text(str(before - _rss()))
            return {"clip": torch.zeros(1), "skipped": []}

    cfg = small_cfg(synthetic_root, str(tmp_path), "data.num_workers=1")
    next(iter(loader_for(cfg, "val", Probe())))
    assert float(probe.read_text()) < 4   # freeing 40 MiB in a worker returned nothing to the kernel


def _rss() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")) / 1024
