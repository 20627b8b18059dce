"""What the protocol tests expect of the scenarios in ``protocol_cases`` (the same on CPU emulation and
on GPUs): the disagreement cases, and the checks of what every rank saw. No imports, so the pytest
process can read it without loading the kernels."""

# (kind, world size) of the disagreement cases, and the kinds the call digests must catch (the
# others may also end in a timeout or a growth mismatch, each an error on every rank)
DISAGREEMENTS = [("swapped_sizes", 2), ("other_sizes", 2), ("other_rows", 2), ("other_width", 2), ("other_dtype", 2),
                 ("other_mode", 2), ("other_collective", 2), ("swapped_device_sizes", 2), ("permuted_sizes", 3),
                 ("permuted_device_sizes", 3), ("other_epilogue", 2), ("other_packing", 2)]
SEEN_IN_DIGESTS = {"swapped_sizes", "other_width", "other_dtype", "other_collective", "swapped_device_sizes",
                   "permuted_sizes", "permuted_device_sizes", "other_epilogue", "other_packing"}
# flagged-word disagreements, reported at once: a CALL word that differs from the digest ends the
# wait (the words of the other call, here of another collective or format, need not all arrive)
REPORTED_AT_ONCE = {"other_collective", "other_packing"}
# the calls a rank may be absent from (protocol_cases.ROWS_BY_MODE): each collective's every mode
ABSENT_MODES = ["ll", "push", "large", "gather_ll", "gather"]


def assert_absent_rank_fails_everyone(results: list, absent_rank: int, waited_s: tuple) -> None:
    """``dead_peer_case``: every rank's check() raises the failed state, the next call is NaN and
    raises too, and every rank that made the call got NaN and the timeout within ``waited_s``
    (low, high) seconds."""
    for rank, got in enumerate(results):
        assert got["check"] and "failed state" in got["check"], (rank, got)
        assert got["sticky_nan"] and got["sticky_check"] and "failed state" in got["sticky_check"], (rank, got)
        if rank != absent_rank:
            assert got["nan"] and "ran past the timeout" in got["check"], (rank, got)
            assert waited_s[0] < got["waited_s"] < waited_s[1], (rank, got)


def assert_every_rank_errs(results: list, kind: str, max_wait_s: float) -> None:
    """``disagree_case``: an error on every rank, no rank a result that is not NaN, no rank waiting
    past ``max_wait_s``; the kinds the digests catch name the disagreement."""
    for rank, (seconds, got, nan) in enumerate(results):
        assert got, f"rank {rank}: no error for {kind}"
        assert nan in (None, True), f"rank {rank}: a result that is not NaN for {kind}"
        assert seconds < max_wait_s, f"rank {rank}: waited {seconds:.0f} s"
    if kind in SEEN_IN_DIGESTS:
        assert all(any("different calls" in g for g in got) for _, got, _ in results), results
    if kind in REPORTED_AT_ONCE:
        assert not any("past the timeout" in g for _, got, _ in results for g in got), results
