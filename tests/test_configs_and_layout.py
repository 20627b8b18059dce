"""Host-side pieces: workspace layout, tune-file lookup, the mode choice (single process)."""

from __future__ import annotations

import json

import pytest

from kernels import configs
from kernels.layout import PMAX, Layout, header_words, word_offsets


def test_layout_regions_are_aligned_and_disjoint():
    lay = Layout(4, stage_bytes=1000, ll_bytes=3000, push_bytes=0, scratch_bytes=5000, arena_bytes=7)
    starts = [0, lay.stage_offset, lay.slot_offset, lay.scratch_offset, lay.arena_offset, lay.total_bytes]
    assert starts == sorted(starts) and all(s % 256 == 0 for s in starts)
    assert lay.stage_offset >= header_words(4) * 8
    assert lay.slot_offset - lay.stage_offset >= 2 * 1000
    assert lay.scratch_offset - lay.slot_offset >= 2 * 4 * 2 * 3000  # [parity][source] slots of flagged words
    assert lay.total_bytes - lay.arena_offset >= 7
    assert word_offsets(4)["ERR"] == PMAX * 21 and header_words(4) == PMAX * 21 + 8


def test_push_slots_hold_the_larger_of_flagged_and_plain_data():
    lay = Layout(2, stage_bytes=0, ll_bytes=1000, push_bytes=0, scratch_bytes=0, arena_bytes=0)
    assert lay.slot_bytes >= 2000  # flagged words: two bytes per data byte
    grown = lay.grown(push_bytes=5000)
    assert grown.slot_bytes >= 5000 and grown.ll_bytes == 1000
    assert grown.scratch_offset - grown.slot_offset == 2 * 2 * grown.slot_bytes


def test_layout_grows_to_powers_of_two_and_never_shrinks():
    lay = Layout(2, 4096, 1024, 0, 0, 0)
    grown = lay.grown(scratch_bytes=3000, arena_bytes=5)
    assert (grown.scratch_bytes, grown.arena_bytes) == (4096, 8)
    assert grown.grown(scratch_bytes=10) == grown
    assert grown.ll_bytes == lay.ll_bytes and grown.stage_bytes == lay.stage_bytes


def test_tune_file_lookup_exact_then_nearest_bucket_then_default(tmp_path, monkeypatch):
    table = {"entries": {
        configs.table_key("large", 4, "bfloat16", 7168, 20): dict(block=8192, num_warps=16, programs_per_sm=4,
                                                                  tiles_per_program=1, relay=False),
        configs.table_key("large", 4, "bfloat16", 7168, 24): dict(block=2048, num_warps=4, programs_per_sm=1,
                                                                  tiles_per_program=1, relay=True)}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("KERNELS_TUNE_FILE", str(path))
    configs.load_table.cache_clear()
    configs._lookup_bucket.cache_clear()
    try:
        assert configs.lookup("gpu-x", "large", 4, "bfloat16", 7168, 1 << 20).block == 8192  # exact bucket 20
        assert configs.lookup("gpu-x", "large", 4, "bfloat16", 7168, 1 << 23).block == 2048  # nearest: 24
        assert configs.lookup("gpu-x", "large", 2, "bfloat16", 7168, 1 << 20) == configs.DEFAULTS["large"]
        assert configs.lookup("gpu-x", "ll", 4, "bfloat16", 7168, 100) == configs.DEFAULTS["ll"]
    finally:
        configs.load_table.cache_clear()
        configs._lookup_bucket.cache_clear()


def test_tune_files_merge_so_tuning_one_mode_keeps_the_others(tmp_path, monkeypatch):
    """bench.tune writes only what it tuned to ~/.cache; entries it did not touch still come from the
    files after it, and KERNELS_TUNE_FILE overrides the same entry of the cache file."""
    def entry(block):
        return dict(block=block, num_warps=4, programs_per_sm=1, tiles_per_program=1, relay=True)
    ll, large = configs.table_key("ll", 2, "bfloat16", 7168, 14), configs.table_key("large", 2, "bfloat16", 7168, 24)
    cache = tmp_path / ".cache" / "reduce_scatterv" / "gpu-x.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"entries": {ll: entry(512), large: entry(2048)}}))
    override = tmp_path / "mine.json"
    override.write_text(json.dumps({"entries": {large: entry(8192)}}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KERNELS_TUNE_FILE", str(override))
    configs.load_table.cache_clear()
    configs._lookup_bucket.cache_clear()
    try:
        assert configs.lookup("gpu-x", "ll", 2, "bfloat16", 7168, 1 << 14).block == 512  # from the cache file
        assert configs.lookup("gpu-x", "large", 2, "bfloat16", 7168, 1 << 24).block == 8192  # overridden
    finally:
        configs.load_table.cache_clear()
        configs._lookup_bucket.cache_clear()


@pytest.mark.parametrize("nbytes,bucket", [(1, 0), (2, 1), (3, 2), (1024, 10), (1025, 11)])
def test_size_bucket(nbytes, bucket):
    assert configs.size_bucket(nbytes) == bucket


ROW = 7168 * 2  # bytes of one bf16 row of H 7168


@pytest.mark.parametrize("sizes,relayed,nccl", [
    ([1, 1, 1, 1], False, False),  # decode: the kernels' latency wins
    ([4096] * 4, False, False),  # even: the direct pull reads 3/4 of what NCCL moves
    ([32, 0, 0, 0], True, False),  # one owner, under 0.6 MB: still the kernels
    ([64, 0, 0, 0], True, True),  # one owner, 0.9 MB: NCCL's one chain (measured 14.2 vs 16.1 us)
    ([256, 427, 597, 768], False, False),  # uneven 0.5x..1.5x of 512 rows: kernel (111.6 vs 124.3 us)
    ([2048, 3413, 4779, 6144], False, True),  # ... of 4096 rows: NCCL (641 vs 773 us)
    ([2048, 2048, 2048, 0], False, False),  # one idle rank, 88 MB: even match, the kernel stays
    ([8192, 8192, 8192, 0], False, True),  # ... 352 MB: NCCL (1000 vs 1056 us)
    ([8192, 0], False, False),  # 2 GPUs: never dispatched (the pull measured at or above NCCL)
])
def test_dispatch_model_sends_only_measured_losses_to_nccl(sizes, relayed, nccl):
    """The host-size dispatch rule reproduces the 4x H200 measurements it was fitted to."""
    assert configs.DISPATCH.prefers_nccl(sizes, ROW, relayed) == nccl


def test_push_limits_default_by_world_size_and_follow_the_environment(monkeypatch):
    from kernels.workspace import default_ll_bytes, default_push_bytes

    monkeypatch.delenv("KERNELS_LL_BYTES", raising=False)
    monkeypatch.delenv("KERNELS_PUSH_BYTES", raising=False)
    # measured crossovers (bench/NOTES.md): 2 GPUs push further than 3+
    assert (default_ll_bytes(2), default_push_bytes(2)) == (512 << 10, 8 << 20)
    for world in (3, 4, 8):
        assert (default_ll_bytes(world), default_push_bytes(world)) == (256 << 10, 4 << 20)
    monkeypatch.setenv("KERNELS_LL_BYTES", "0")
    monkeypatch.setenv("KERNELS_PUSH_BYTES", "12345")
    assert (default_ll_bytes(2), default_push_bytes(4)) == (0, 12345)
