"""Compiled Triton for CUDA tensors, Triton's interpreter for CPU tensors, chosen per process.

Triton decides at decoration time whether a ``@triton.jit`` function is compiled or interpreted, so
the kernel modules are imported lazily, on the first call, after the mode is fixed. A process uses
one mode: CPU emulation runs one process per rank anyway.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

_mode: str | None = None
_PACKAGE = __name__.rpartition(".")[0]  # reduce_scatterv installed; kernels from a checkout's root
_KERNEL_MODULES = tuple(f"{_PACKAGE}.{m}" for m in (
    "signals", "tiles", "reduce_scatterv_kernel", "push_kernel", "all_gatherv_kernel", "all_gatherv_ll_kernel",
    "launch_args", "epilogue_functions", "hop_kernel", "flagged_words")) + ("deepseek_v4.hc_post_kernel",)


# Triton's interpreter runs these kernels from 3.7 on (checked with 3.7.1, 3.8.0 and 3.9.0); 3.6's stops
# with "only 0-dimensional arrays can be converted to Python scalars"
INTERPRETER_MIN = (3, 7)


def interpreter_problem() -> str | None:
    """Why this environment's Triton cannot run the kernels in its interpreter (CPU emulation), in
    one line, or None. Reads the installed version without importing triton."""
    try:
        installed = version("triton")
    except PackageNotFoundError:
        return "CPU emulation runs Triton's interpreter: install triton (3.7 or later)"
    if tuple(int(x) for x in re.findall(r"\d+", installed)[:2]) < INTERPRETER_MIN:
        return (f"CPU emulation needs Triton >= 3.7 (its interpreter); this environment has Triton {installed}, "
                f"which runs the kernels on GPUs only")
    return None


def kernel_module(device_type: str) -> ModuleType:
    """The kernel module for tensors on ``device_type`` ('cuda' or 'cpu')."""
    global _mode
    want = "interpret" if device_type == "cpu" else "compile"
    if _mode is None:
        already = [m for m in _KERNEL_MODULES if m in sys.modules]
        interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        if already and interpreting != (want == "interpret"):
            raise RuntimeError(
                f"kernels were imported for {'the interpreter' if interpreting else 'the GPU'} before the first "
                f"call with {device_type} tensors; import the kernel modules only through the API")
        if want == "interpret":
            problem = interpreter_problem()
            if problem:
                raise RuntimeError(problem)
            _check_triton_imported_for_the_interpreter()
            os.environ["TRITON_INTERPRET"] = "1"
        _mode = want
    elif _mode != want:
        raise RuntimeError(
            f"this process already runs the kernels in {_mode} mode; {device_type} tensors need "
            f"{want} mode: use one process per device type (CPU emulation runs one process per rank)")
    return importlib.import_module(f"{_PACKAGE}.kernel_set")


def _check_triton_imported_for_the_interpreter() -> None:
    """Triton's own ``@jit`` library functions (``tl.max``...) are fixed for the GPU when ``triton`` is
    imported without ``TRITON_INTERPRET=1``, and the interpreter then cannot call them. Anything that
    imports triton before the first CPU call does that (``torch.compile``, a torch custom op's first
    call, SGLang, vLLM): say so instead of failing inside the kernel."""
    if "triton.language" not in sys.modules:
        return
    from triton.runtime.jit import JITFunction

    if isinstance(getattr(sys.modules["triton.language"], "max", None), JITFunction):
        raise RuntimeError(
            "CPU emulation runs Triton's interpreter, which needs TRITON_INTERPRET=1 before triton is first "
            "imported; triton was imported earlier in this process (by torch.compile, a custom op's first call, "
            "an engine...): set TRITON_INTERPRET=1 in the environment of CPU-emulation processes")
