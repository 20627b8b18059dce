"""Compile the kernels for sm_90 without a GPU and print registers and spills per thread (ptxas -v).

    python scripts/registers_sm90.py                # every variant below
    python scripts/registers_sm90.py pull           # those whose name contains "pull"
    python scripts/registers_sm90.py --ptx DIR      # also write each variant's PTX into DIR

Variants: the kernels as the launchers run them for bf16 rows of H 7168 on 2 ranks (the tuned
blocks and warps of ``configs.DEFAULTS``, the pull's register caps), with no epilogue and with
each epilogue (``api.epilogue_config``). Integer arguments that are multiples of 16 at run time
(addresses, H) are compiled as such, as Triton specialises them. The bundled ptxas may not read
the PTX version Triton writes: it is lowered to 8.7 first.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from reduce_scatterv import push_kernel, reduce_scatterv_kernel  # noqa: E402

PULL, PUSH = reduce_scatterv_kernel.reduce_scatterv_kernel, push_kernel.reduce_scatterv_push_kernel
INT32 = ["rank", "in_cap", "out_cap", "H", "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "relay_min_tiles",
         "relay_max_cost_pct", "programs_per_sm", "tiles_per_program", "slot_bytes"]
DIVISIBLE_BY_16 = ["H", "table_addr", "base_addr", "in_addr", "out_addr", "sizes_addr", "expose_off", "scratch_off",
                   "slot_off", "slot_bytes", "ep0", "ep1", "ep2", "ep3"]
HC_POST = dict(EPILOGUE=1, HC=4, ROWS=False, WRITE_F=False)
RMSNORM = dict(EPILOGUE=2, HC=1, ROWS=True, WRITE_F=False)
# name: (kernel, constexprs, num_warps, maxnreg)
VARIANTS = {
    "pull in place": (PULL, dict(BLOCK=4096), 8, 64),
    "pull staged": (PULL, dict(BLOCK=4096, STAGE=True), 8, 80),
    "push": (PUSH, dict(BLOCK=8192), 4, None),
    "ll": (PUSH, dict(BLOCK=1024, FLAGGED=True, VEC_BYTES=8), 4, None),
    "pull in place + hc_post": (PULL, dict(BLOCK=2048, **HC_POST), 8, 128),
    "pull staged + hc_post": (PULL, dict(BLOCK=2048, STAGE=True, **HC_POST), 8, 128),
    "push + hc_post": (PUSH, dict(BLOCK=2048, **HC_POST), 4, None),
    "ll + hc_post": (PUSH, dict(BLOCK=1024, FLAGGED=True, VEC_BYTES=8, **HC_POST), 4, None),
    "pull in place + rmsnorm": (PULL, dict(BLOCK=8192, **RMSNORM), 16, None),
    "push + rmsnorm": (PUSH, dict(BLOCK=8192, **RMSNORM), 16, None),
}


def compile_variant(fn, constexprs: dict, num_warps: int, maxnreg: int | None):
    base = dict(W=2, WP=2, DTYPE=tl.bfloat16, SIZES_DTYPE=None, ALIGN=8, VEC_BYTES=16, CHAOS=False)
    base.update(dict(STAGE=False, RELAY=False) if fn is PULL else dict(FLAGGED=False, PER_WORD=2))
    base.update(constexprs)
    for name, p in inspect.signature(fn.fn).parameters.items():  # constexprs the launchers leave at their default
        if name not in base and p.default is not inspect.Parameter.empty:
            base[name] = p.default
    sig = {p.name: "constexpr" if p.name in base else "fp32" if p.name == "ep_eps" else
           "i32" if p.name in INT32 else "i64" for p in fn.params}
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in DIVISIBLE_BY_16 if k in fn.arg_names}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, attrs=attrs,
                                    constexprs={(fn.arg_names.index(k),): v for k, v in base.items()})
    options = {"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def ptxas_report(ptx: str) -> str:
    ptx = re.sub(r"\.version \d+\.\d+", ".version 8.7", ptx)
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/k.ptx", "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-arch=sm_90a", "-v", f"{d}/k.ptx", "-o", f"{d}/k.cubin"], capture_output=True,
                             text=True)
    text = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not regs:
        return "ptxas failed: " + text[-500:]
    return f"{regs.group(1)} registers, spills {spills.group(1)}/{spills.group(2)} bytes (stores/loads)"


def main() -> None:
    args = sys.argv[1:]
    ptx_dir = None
    if "--ptx" in args:
        i = args.index("--ptx")
        ptx_dir = args[i + 1]
        del args[i: i + 2]
        os.makedirs(ptx_dir, exist_ok=True)
    only = args[0] if args else ""
    print(f"triton {triton.__version__}, sm_90, bf16, W=2")
    for name, (fn, constexprs, warps, cap) in VARIANTS.items():
        if only not in name:
            continue
        k = compile_variant(fn, dict(constexprs), warps, cap)
        if ptx_dir:
            with open(os.path.join(ptx_dir, name.replace(" ", "_").replace("+", "") + ".ptx"), "w") as f:
                f.write(k.asm["ptx"])
        print(f"{name:28s} BLOCK {constexprs['BLOCK']:5d}, {warps:2d} warps, cap {cap or '-':>3}: "
              f"{ptxas_report(k.asm['ptx'])}", flush=True)


if __name__ == "__main__":
    main()
