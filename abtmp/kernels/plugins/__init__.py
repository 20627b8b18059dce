"""Engine plugins: SGLang's and vLLM's ``GroupCoordinator.reduce_scatterv`` on the fused kernel.

Off unless ``KERNELS_ENGINE_PLUGIN=1`` (``kernels/settings.py``). The engines load them from the
entry points in ``pyproject.toml`` in every scheduler / worker process:

- ``sglang.py``: entry point ``reduce_scatterv`` of group ``sglang.srt.plugins``, hooks through
  SGLang's ``HookRegistry``;
- ``vllm.py``: entry point ``reduce_scatterv`` of group ``vllm.general_plugins``, wraps vLLM's
  ``GroupCoordinator`` methods;
- ``common.py``: what both share (switch agreement across ranks, which calls the kernel serves,
  workspace footprint, cap and reservation, reasons logged once).
"""
