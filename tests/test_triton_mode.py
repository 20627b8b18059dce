"""The Triton mode guard knows every kernel module (single process, nothing runs). Triton fixes at
decoration time whether a function is compiled or interpreted, so the API imports the modules that
define Triton functions only once a call has fixed the mode, and refuses a first call whose mode
another import already fixed; a kernel module missing from its list would slip past that check."""

from __future__ import annotations

from pathlib import Path

from reduce_scatterv import _triton_mode

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_that_defines_triton_functions_is_known_to_the_mode_guard():
    package = _triton_mode._PACKAGE
    defining = {f"{package if folder == 'kernels' else folder}.{path.stem}"
                for folder in ("kernels", "deepseek_v4") for path in (ROOT / folder).glob("*.py")
                if "@triton.jit" in path.read_text() and path.stem != "_triton_mode"}
    assert defining, "no kernel module found: the test looks in the wrong place"
    assert defining <= set(_triton_mode._KERNEL_MODULES), sorted(defining - set(_triton_mode._KERNEL_MODULES))
