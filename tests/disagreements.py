"""The disagreement cases of the protocol tests (``protocol_cases.disagree_case``), shared by the CPU and
GPU tests; no imports, so the pytest process can read it without loading the kernels."""

# (kind, world size) of the disagreement cases, and the kinds the call digests must catch (the
# others may also end in a timeout or a growth mismatch, each an error on every rank)
DISAGREEMENTS = [("swapped_sizes", 2), ("other_sizes", 2), ("other_rows", 2), ("other_width", 2), ("other_dtype", 2),
                 ("other_mode", 2), ("swapped_device_sizes", 2), ("permuted_sizes", 3), ("permuted_device_sizes", 3)]
SEEN_IN_DIGESTS = {"swapped_sizes", "other_width", "other_dtype", "swapped_device_sizes", "permuted_sizes",
                   "permuted_device_sizes"}
