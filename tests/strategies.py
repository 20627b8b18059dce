"""Hypothesis strategies for reduce_scatterv calls: the distributions that occur in DP attention."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def sizes(draw, world: int, max_rows: int = 12):
    """Rows per rank: uneven, with idle ranks, one owner, all idle, or even."""
    shape = draw(st.sampled_from(["any", "any", "one_owner", "all_zero", "even", "idle_rank"]))
    if shape == "all_zero":
        return [0] * world
    if shape == "even":
        return [draw(st.integers(1, max_rows))] * world
    if shape == "one_owner":
        owner = draw(st.integers(0, world - 1))
        return [draw(st.integers(1, 2 * max_rows)) if r == owner else 0 for r in range(world)]
    s = draw(st.lists(st.integers(0, max_rows), min_size=world, max_size=world))
    if shape == "idle_rank":
        s[draw(st.integers(0, world - 1))] = 0
    return s


@st.composite
def calls(draw, world: int, max_rows: int = 12, large_rows: bool = False):
    """Keyword arguments of ``tests.cases.reduce_scatterv_case``."""
    device_sizes = draw(st.booleans())
    return dict(
        sizes=draw(sizes(world, max_rows)),
        rest=draw(st.sampled_from([(1,), (3,), (8,), (16,), (40,), (64,), (100,), (2, 24), (3, 1, 8)])),
        dtype=draw(st.sampled_from(["bfloat16", "float16", "float32"])),
        seed=draw(st.integers(0, 2**20)),
        with_output=draw(st.booleans()),
        resident=draw(st.booleans()),
        device_sizes=device_sizes,
        int32_sizes=device_sizes and draw(st.booleans()),
        spare_rows=draw(st.integers(0, 3)) if device_sizes else 0,
        noncontig=draw(st.integers(0, 4)) == 0,
        group=draw(st.sampled_from(["world", "push", "large", "mixed"])),
        repeat=draw(st.integers(1, 2)),
    )
