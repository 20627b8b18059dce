"""Host-side pieces: workspace layout, tune-file lookup, the mode choice (single process)."""

from __future__ import annotations

import json

import pytest

from reduce_scatterv import configs
from reduce_scatterv.layout import PMAX, Layout, header_words, word_offsets


def test_layout_regions_are_aligned_and_disjoint():
    lay = Layout(4, ll_bytes=3000, push_bytes=1000, scratch_bytes=5000, arena_bytes=7)
    starts = [0, lay.ll_slot_offset, lay.slot_offset, lay.scratch_offset, lay.arena_offset, lay.total_bytes]
    assert starts == sorted(starts) and all(s % 256 == 0 for s in starts)
    assert lay.ll_slot_offset >= header_words(4) * 8
    assert lay.slot_offset - lay.ll_slot_offset >= 2 * 4 * 2 * 3000  # [parity][source] slots of flagged words
    assert lay.scratch_offset - lay.slot_offset >= 2 * 4 * 1000  # [parity][source] plain-push slots
    assert lay.total_bytes - lay.arena_offset >= 7
    assert word_offsets(4)["ERR"] == PMAX * 29 and header_words(4) == PMAX * 29 + 8


def test_the_two_arena_regions_are_disjoint_and_grow_apart():
    """Two ``Workspace.empty`` tensors can be live at once (the gather's input and the MoE's output)."""
    lay = Layout(2, 1024, 0, 100, 0).grown(arena_bytes=3000, arena1_bytes=5000)
    assert lay.region_offset(0) == lay.arena_offset and lay.region_offset(1) >= lay.arena_offset + 3000
    assert lay.total_bytes >= lay.region_offset(1) + 5000 and lay.region_offset(1) % 256 == 0
    assert lay.grown(arena_bytes=3000) == lay and lay.grown(arena1_bytes=6000).arena_bytes == lay.arena_bytes


def test_flagged_word_slots_are_written_by_no_other_mode():
    """Flagged words and plain-push data never share bytes, whatever the plain slots grow to."""
    lay = Layout(2, ll_bytes=1000, push_bytes=0, scratch_bytes=0, arena_bytes=0)
    assert lay.ll_slot_bytes >= 2000  # two bytes per data byte
    grown = lay.grown(push_bytes=5000)
    assert grown.slot_bytes >= 5000 and grown.ll_bytes == 1000 and grown.ll_slot_offset == lay.ll_slot_offset
    assert grown.slot_offset >= grown.ll_slot_offset + 2 * 2 * grown.ll_slot_bytes
    assert grown.scratch_offset - grown.slot_offset == 2 * 2 * grown.slot_bytes


def test_the_flagged_word_slots_hold_the_larger_of_the_two_collectives_limits():
    """all_gatherv's limit defaults to ll_bytes; a larger one widens every (parity, source) slot, and
    growth keeps it."""
    assert Layout(2, 1000, 0, 0, 0).gather_ll_limit == 1000
    lay = Layout(2, 1000, 0, 0, 0, gather_ll_bytes=3000)
    assert (lay.ll_bytes, lay.gather_ll_limit) == (1000, 3000) and lay.ll_slot_bytes >= 6000
    assert Layout(2, 5000, 0, 0, 0, gather_ll_bytes=0).ll_slot_bytes >= 10000
    grown = lay.grown(push_bytes=4096, scratch_bytes=10)
    assert grown.gather_ll_limit == 3000 and grown.slot_offset >= grown.ll_slot_offset + 2 * 2 * 6000


def test_layout_grows_to_powers_of_two_and_never_shrinks():
    lay = Layout(2, 1024, 0, 0, 0)
    grown = lay.grown(scratch_bytes=3000, arena_bytes=5)
    assert (grown.scratch_bytes, grown.arena_bytes) == (4096, 8)
    assert grown.grown(scratch_bytes=10) == grown
    assert grown.ll_bytes == lay.ll_bytes


@pytest.mark.parametrize("epoch", [0, 5, 2**31 - 1, 2**32 - 1, 2**43 - 1, 2**63 - 1, 2**64 - 1])
def test_a_fresh_header_satisfies_no_wait_of_its_first_call(epoch):
    """The header a workspace starts from (creation, reset) holds what call ``epoch - 1`` would have
    left: every barrier word is one behind ``epoch + 1`` and every PUSH / RELAY word behind round 0
    of ``epoch``, compared as the kernels compare (wrap-safe, in int64)."""
    from reduce_scatterv.layout import ROUND_BITS, initial_header

    def behind(seen, target):  # (seen - target) < 0 in two's complement, as signals._behind
        d = (seen - target) & ((1 << 64) - 1)
        return d >> 63 == 1

    words = dict(initial_header(4, epoch))
    assert behind(words["SIG_START"], epoch + 1) and behind(words["SIG_END"], epoch + 1)
    for j in (0, 1, 2**ROUND_BITS - 2):
        assert behind(words["PUSH"], (epoch << ROUND_BITS) + j + 1)
        assert behind(words["RELAY"], (epoch << ROUND_BITS) + j + 1)
    assert words["CALL"] == 0 and words["ERR"] == 0 and words["CNT"] & ((1 << 64) - 1) == epoch


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
        # the gather's pull takes the reduce-scatter pull's entries while it has none of its own
        assert configs.lookup("gpu-x", "gather", 4, "bfloat16", 7168, 1 << 23).block == 2048
        assert configs.lookup("gpu-x", "gather_ll", 4, "bfloat16", 7168, 100) == configs.DEFAULTS["ll"]
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


def test_push_limits_default_by_world_size():
    from reduce_scatterv.workspace import default_gather_ll_bytes, default_ll_bytes, default_push_bytes

    # measured crossovers (bench/NOTES.md): 2 GPUs push further than 3+; the gather's flagged words
    # (it has no plain push) run to 1.5 MiB on 2 GPUs
    assert (default_ll_bytes(2), default_gather_ll_bytes(2), default_push_bytes(2)) == (1 << 20, 3 << 19, 8 << 20)
    for world in (3, 4, 8):
        assert (default_ll_bytes(world), default_gather_ll_bytes(world), default_push_bytes(world)) == (
            256 << 10, 256 << 10, 4 << 20)


def test_the_host_call_tag_is_deterministic_order_sensitive_and_int64():
    """The host's part of a call digest: deterministic, order-sensitive, within int64."""
    from reduce_scatterv.api import call_tag

    assert call_tag(1, 2, 3) != call_tag(1, 3, 2) and call_tag(1, 2, 3) == call_tag(1, 2, 3)
    assert all(-(1 << 63) <= call_tag(m, 7168, 1, r) < 1 << 63 for m in (1, 2, 3) for r in (0, 1, 2**40))


@pytest.mark.parametrize("warps, programs, cap", [(8, 4, 64), (8, 3, 80), (8, 2, 128), (4, 4, 128), (4, 3, 168),
                                                  (8, 1, None), (4, 1, None), (16, 4, 32)])
def test_register_cap_fits_the_programs_per_sm(warps, programs, cap):
    """``maxnreg`` that lets ``programs`` programs of ``warps`` warps share one SM's 64K registers
    (multiples of 8; None when 255, the most a thread can have, fit)."""
    assert configs.register_cap(warps, programs) == cap
    if cap is not None:
        assert cap * 32 * warps * programs <= configs.REGISTERS_PER_SM

