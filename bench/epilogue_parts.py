"""What the fused hc_post costs, part by part: A/B by stubs, not product paths. Each variant changes
one thing before the kernels compile; the rest is ``bench.layer`` (its arguments pass through).
One torchrun per variant, alternated (results in bench/NOTES.md).

    base                  the library as it is
    fuse_to_32            the V4 block fuses hc_post into the combine up to 32 rows per rank
                          (``post_path.FUSED_HC_POST_MAX_ROWS``, 8): where fusing stops paying
    fuse_to_32_1024x4     fuse_to_32, and the flagged-word combine with hc_post runs 1024 x 4 tiles
                          where the tune table has larger ones (2048 x 8 from 19 rows of H 7168
                          bf16 on 2 GPUs; 10-18 rows have 1024 x 4 already): in loopback 1024 x 4
                          is far faster with hc_post at 32 rows (5.8 against 10.4 us)
    post_only             hc_post without the residual: out[:, j] = post[:, j] * f (wrong results,
                          timing only): what the residual's and comb's loads cost
    one_store             hc_post stores stream 0 only (wrong results, timing only): what the other
                          streams' stores cost
    terms_after_poll      the flagged-word combine loads hc_post's residual, post and comb after
                          its poll, not before it (``epilogue_functions.prepare``; the order
                          before it was moved): what overlapping those loads with the wait saves
    f_only                the epilogue stores f and nothing else: no hc_post loads, arithmetic or
                          stores (wrong results, timing only): what hc_post costs beyond carrying
                          an epilogue (the sums back in element order, the registers, the code);
                          bench/loopback.py only (it passes an f-sized output to every call)

    VARIANT=base|fuse_to_32|fuse_to_32_1024x4|post_only|one_store|terms_after_poll torchrun --nproc-per-node 2 bench/epilogue_parts.py --preset latency --out /tmp/parts-$VARIANT"""
import os
import sys

import triton
import triton.language as tl

sys.path.insert(0, os.getcwd())

VARIANTS = ("base", "fuse_to_32", "fuse_to_32_1024x4", "post_only", "one_store", "terms_after_poll", "f_only")


def _patch(module, name: str, fn, variant: str) -> None:
    """Replace ``module.name`` (before any kernel compiles); a name the library no longer has is an
    error, not a variant that silently times the base."""
    if not hasattr(module, name):
        raise SystemExit(f"VARIANT={variant}: {module.__name__} has no {name} to replace")
    setattr(module, name, fn)


def apply_variant(variant: str) -> None:
    """Make this process run ``variant`` (one of VARIANTS); call before the first kernel compiles."""
    if variant not in VARIANTS:
        raise SystemExit(f"VARIANT={variant!r}: one of {', '.join(VARIANTS)}")
    if variant.startswith("fuse_to_32"):
        from deepseek_v4 import post_path
        post_path.FUSED_HC_POST_MAX_ROWS = 32
        if variant == "fuse_to_32_1024x4":
            _ll_epilogue_tiles_1024x4(variant)
    elif variant in ("post_only", "one_store"):
        _stub_hc_post(variant)
    elif variant == "terms_after_poll":
        _terms_after_poll(variant)
    elif variant == "f_only":
        _f_only(variant)


# the library's modules, imported when a variant needs them: the stubs below are compiled with this
# module's globals (Triton resolves a kernel's names there), so they live here, not in locals
epilogue_functions = push_kernel = None


def _ll_epilogue_tiles_1024x4(variant: str) -> None:
    import dataclasses

    from reduce_scatterv import api

    shipped = api.epilogue_config

    def epilogue_config(mode, config, hidden, epilogue):
        config = shipped(mode, config, hidden, epilogue)
        if mode == "ll" and epilogue is not None and config.block > 1024:
            config = dataclasses.replace(config, block=1024, num_warps=4)
        return config

    _patch(api, "epilogue_config", epilogue_config, variant)


def _stub_hc_post(variant: str) -> None:
    global epilogue_functions
    from reduce_scatterv import epilogue_functions

    if variant == "post_only":
        @triton.jit
        def _hc_terms(row, col0, offs, mask, H, residual_addr, post_addr, comb_addr, DTYPE: tl.constexpr,
                      HC: tl.constexpr, VEC_BYTES: tl.constexpr):
            j = epilogue_functions._stream_ids(HC)  # post only: no residual or comb load
            post = tl.load(post_addr.to(tl.pointer_type(tl.float32)) + row * HC + j, mask=j < HC, other=0.0)
            return tl.zeros([j.shape[0], offs.shape[0]], tl.float32), post

        _patch(epilogue_functions, "_hc_terms", _hc_terms, variant)
    else:
        @triton.jit
        def _hc_store(x, terms, post, row, col0, offs, mask, H, out_addr, DTYPE: tl.constexpr, HC: tl.constexpr,
                      VEC_BYTES: tl.constexpr):
            j = epilogue_functions._stream_ids(HC)  # every stream computed, stream 0 stored
            out_rows = tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + (row * (HC * H) + col0) + j * H,
                                      VEC_BYTES)
            tl.store(out_rows[:, None] + offs[None, :], (post[:, None] * x[None, :] + terms).to(DTYPE),
                     mask=(j < 1)[:, None] & mask[None, :])

        _patch(epilogue_functions, "_hc_store", _hc_store, variant)


@triton.jit
def _prepare_nothing(base, offs, mask, H, ep0, ep1, ep2, DTYPE: tl.constexpr, EPILOGUE: tl.constexpr,
                     HC: tl.constexpr, VEC_BYTES: tl.constexpr):
    """``epilogue_functions.prepare`` that loads nothing before the poll (placeholders)."""
    return tl.zeros([1, offs.shape[0]], tl.float32), tl.zeros([1], tl.float32)


def _terms_after_poll(variant: str) -> None:
    global epilogue_functions, push_kernel
    from reduce_scatterv import epilogue_functions, push_kernel

    @triton.jit
    def finish_prepared(x, terms, post, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE: tl.constexpr,
                        EPILOGUE: tl.constexpr, HC: tl.constexpr, WRITE_F: tl.constexpr, SPAN: tl.constexpr,
                        ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
        epilogue_functions.finish(x, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE, EPILOGUE, HC,
                                  WRITE_F, SPAN, ALIGN, VEC_BYTES)  # prepares here, after the poll

    _patch(push_kernel, "prepare", _prepare_nothing, variant)
    _patch(push_kernel, "finish_prepared", finish_prepared, variant)


def _f_only(variant: str) -> None:
    global epilogue_functions, push_kernel
    from reduce_scatterv import epilogue_functions, push_kernel

    @triton.jit
    def finish_prepared(x, terms, post, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE: tl.constexpr,
                        EPILOGUE: tl.constexpr, HC: tl.constexpr, WRITE_F: tl.constexpr, SPAN: tl.constexpr,
                        ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
        f_addr = f_addr.to(tl.int64)  # f only, in element order (where hc_post would start)
        tl.store(tl.multiple_of(f_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, x.to(DTYPE), mask=mask)

    _patch(push_kernel, "prepare", _prepare_nothing, variant)
    _patch(push_kernel, "finish_prepared", finish_prepared, variant)


if __name__ == "__main__":
    VARIANT = os.environ.get("VARIANT", "base")
    if VARIANT == "f_only":  # it writes f where the block passes no f-sized output
        raise SystemExit("VARIANT=f_only: bench/loopback.py --variant f_only only")
    apply_variant(VARIANT)
    from bench.layer import main

    print(f"# variant {VARIANT}", flush=True)
    main(sys.argv[1:])
