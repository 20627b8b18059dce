"""What the fused hc_post costs, part by part: A/B by stubs, not product paths. Each variant changes
one thing before the kernels compile; the rest is ``bench.layer`` (its arguments pass through).
One torchrun per variant, alternated (results in bench/NOTES.md).

    base                  the library as it is
    fuse_to_32            the V4 block fuses hc_post into the combine up to 32 rows per rank
                          (``post_path.FUSED_HC_POST_MAX_ROWS``, 8): where fusing stops paying
    loads_between_stores  hc_post's residual loads between its output stores, one stream's loads
                          per output stream (the epilogue before it loaded every stream first)
    post_only             hc_post without the residual: out[:, j] = post[:, j] * f (wrong results,
                          timing only): what the residual's and comb's loads cost
    one_store             hc_post stores stream 0 only (wrong results, timing only): what the other
                          streams' stores cost

    VARIANT=base|fuse_to_32|loads_between_stores|post_only|one_store torchrun --nproc-per-node 2 bench/epilogue_parts.py --preset latency --out /tmp/parts-$VARIANT"""
import os
import sys

sys.path.insert(0, os.getcwd())

VARIANT = os.environ.get("VARIANT", "base")
if VARIANT == "fuse_to_32":
    from deepseek_v4 import post_path
    post_path.FUSED_HC_POST_MAX_ROWS = 32
elif VARIANT == "loads_between_stores":
    import triton
    import triton.language as tl

    from reduce_scatterv import epilogue_functions

    @triton.jit
    def _hc_post_one_row(x, row, col0, offs, mask, H, residual_addr, post_addr, comb_addr, out_addr,
                         DTYPE: tl.constexpr, HC: tl.constexpr, VEC_BYTES: tl.constexpr):
        at = row * (HC * H) + col0
        res_ptr = tl.multiple_of(residual_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
        out_ptr = tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
        post_ptr = post_addr.to(tl.pointer_type(tl.float32)) + row * HC
        comb_ptr = comb_addr.to(tl.pointer_type(tl.float32)) + row * (HC * HC)
        res0 = tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        for j in tl.static_range(HC):
            y = tl.load(post_ptr + j) * x + tl.load(comb_ptr + j) * res0
            for i in tl.static_range(1, HC):  # reloaded per j: a load may not move above the store before it
                r = tl.load(tl.multiple_of(res_ptr + i * H, VEC_BYTES) + offs, mask=mask, other=0.0).to(tl.float32)
                y += tl.load(comb_ptr + i * HC + j) * r
            tl.store(tl.multiple_of(out_ptr + j * H, VEC_BYTES) + offs, y.to(DTYPE), mask=mask)

    epilogue_functions._hc_post_one_row = _hc_post_one_row
elif VARIANT in ("post_only", "one_store"):
    import triton
    import triton.language as tl

    from reduce_scatterv import epilogue_functions

    ONE_STORE = tl.constexpr(VARIANT == "one_store")
    stream, add_term = epilogue_functions._stream, epilogue_functions._add_term

    @triton.jit
    def _hc_post_one_row(x, row, col0, offs, mask, H, residual_addr, post_addr, comb_addr, out_addr,
                         DTYPE: tl.constexpr, HC: tl.constexpr, VEC_BYTES: tl.constexpr):
        at = row * (HC * H) + col0
        out_ptr = tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
        post_ptr = post_addr.to(tl.pointer_type(tl.float32)) + row * HC
        if ONE_STORE:  # every stream loaded (V4: 4), out[:, 0] computed and stored
            res_ptr = tl.multiple_of(residual_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
            comb_ptr = comb_addr.to(tl.pointer_type(tl.float32)) + row * (HC * HC)
            y = tl.load(post_ptr) * x
            for i in tl.static_range(HC):
                y = add_term(y, stream(res_ptr, i, H, offs, mask, HC, VEC_BYTES), comb_ptr, i, 0, HC)
            tl.store(out_ptr + offs, y.to(DTYPE), mask=mask)
        else:
            for j in tl.static_range(HC):
                tl.store(tl.multiple_of(out_ptr + j * H, VEC_BYTES) + offs, (tl.load(post_ptr + j) * x).to(DTYPE),
                         mask=mask)

    epilogue_functions._hc_post_one_row = _hc_post_one_row
elif VARIANT != "base":
    raise SystemExit(f"VARIANT={VARIANT!r}: base, fuse_to_32, loads_between_stores, post_only or one_store")

from bench.layer import main  # noqa: E402

print(f"# variant {VARIANT}", flush=True)
main(sys.argv[1:])
