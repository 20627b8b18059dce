"""Where does the fused hc_post stop paying? An A/B by a stub, not a product path: VARIANT=fuse_to_32
lets the V4 block's fused path fuse hc_post into the combine up to 32 rows per rank
(``post_path.FUSED_HC_POST_MAX_ROWS``, 8); the rest is ``bench.layer`` (its arguments pass through).
One torchrun per variant, alternated (results in bench/NOTES.md).
    VARIANT=base|fuse_to_32 torchrun --nproc-per-node 2 bench/epilogue_parts.py --preset latency --out /tmp/parts-$VARIANT"""
import os
import sys

sys.path.insert(0, os.getcwd())

VARIANT = os.environ.get("VARIANT", "base")
if VARIANT == "fuse_to_32":
    from deepseek_v4 import post_path
    post_path.FUSED_HC_POST_MAX_ROWS = 32
elif VARIANT != "base":
    raise SystemExit(f"VARIANT={VARIANT!r}: base or fuse_to_32")

from bench.layer import main  # noqa: E402

print(f"# variant {VARIANT}", flush=True)
main(sys.argv[1:])
