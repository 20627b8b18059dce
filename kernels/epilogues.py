"""Epilogues fused into ``reduce_scatterv``: what happens to the fp32 sum of a tile before its one
rounding, instead of storing ``f`` and reading it back in another kernel.

    out = reduce_scatterv.reduce_scatterv(partial, sizes=sizes, epilogue=HcPost(residual, post, comb, out))

An epilogue is a host dataclass (this file: its tensors, checked on the host, and what the kernels
take: a code, four addresses, a scalar, constexprs) and a device function (``epilogue_functions``,
called by every kernel at every store of a finished sum). Tensors are per local row: their first
dimension is this rank's row count (host sizes) or the same capacity as ``f``'s would be (device
sizes: rows past ``sizes[rank]`` are left untouched). Nothing is allocated or synchronised: an
epilogue call is as CUDA-graph safe as a plain one.

``HcPost`` (DeepSeek V4's mHC, ``deepseek_v4/mhc.py:hc_post``):
    ``out[t, j, :] = post[t, j] * f[t, :] + sum_i comb[t, i, j] * residual[t, i, :]``, fp32, one
    rounding; ``f`` the unrounded sum. Runs in every mode (flat tiles).
``ResidualRMSNorm`` (models without mHC; FlashInfer's all-reduce + residual + RMSNorm fusion):
    ``residual_out = round(f + residual)``, ``out = round(rmsnorm(residual_out) * weight)`` where the
    norm is taken of the rounded sum as stored (FlashInfer / TensorRT-LLM semantics: the normalised
    value is the norm of the residual the next layer adds to). Needs whole rows per program: calls
    run with row tiles (a tile is one row, BLOCK = the next power of two >= H) in the plain push and
    the pull; the flagged-word mode ("ll") is not used for it (a row of every peer as flagged
    words does not fit a program's registers at model widths), so such calls push plain data.

Ranks must agree on the epilogue kind (and ``hc``): it is part of the call's digest, so ranks that
disagree get the disagreement error on every rank. After a fault, every output of the epilogue is
NaN (as ``f`` is for a plain call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NONE, HC_POST, RMSNORM = 0, 1, 2


def _check(op: str, name: str, t, shape: tuple, dtype, device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{op}: {name} dtype {t.dtype}, expected {dtype}")
    if t.device != device:
        raise ValueError(f"{op}: {name} is on {t.device} but input_ is on {device}")
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be contiguous")


@dataclass(frozen=True, eq=False)
class HcPost:
    """mHC's hc_post fused into the combine (see the module docstring).

    residual: ``[rows, hc, H]`` activation dtype (the layer's residual streams ``x``).
    post: ``[rows, hc]`` float32. comb: ``[rows, hc, hc]`` float32 (``comb[t, i, j]``: stream i into j).
    out: ``[rows, hc, H]`` activation dtype, written (the new residual streams); returned by the call.
    f_out: optional ``[rows, H]``: also write the combine's result ``f`` (rounded once).
    ``rows``: this rank's ``sizes[rank]`` with host sizes, a capacity with device sizes.
    """

    residual: torch.Tensor
    post: torch.Tensor
    comb: torch.Tensor
    out: torch.Tensor
    f_out: torch.Tensor | None = None

    code = HC_POST
    row_tiles = False

    @property
    def rows(self) -> int:
        return self.out.shape[0] if isinstance(self.out, torch.Tensor) and self.out.dim() else -1

    def check(self, op: str, hidden: int, rest: tuple, dtype: torch.dtype, device: torch.device, rows: int) -> None:
        """Raise, naming the problem, unless every tensor fits a call of ``rest``-shaped rows and
        ``rows`` local rows."""
        if not isinstance(self.residual, torch.Tensor) or self.residual.dim() != 3:
            got = tuple(self.residual.shape) if isinstance(self.residual, torch.Tensor) else self.residual
            raise ValueError(f"{op}: HcPost.residual must be [rows, hc, H], got {got!r}")
        _, hc, h = self.residual.shape
        if h != hidden or len(rest) != 1:
            raise ValueError(f"{op}: HcPost needs rows of H elements [sum(sizes), H] and residual [rows, hc, H]; "
                             f"got input rows {rest} and residual {tuple(self.residual.shape)}")
        if not 1 <= hc <= 8:
            raise ValueError(f"{op}: HcPost supports 1 to 8 hc streams, got {hc}")
        _check(op, "HcPost.residual", self.residual, (rows, hc, h), dtype, device)
        _check(op, "HcPost.post", self.post, (rows, hc), torch.float32, device)
        _check(op, "HcPost.comb", self.comb, (rows, hc, hc), torch.float32, device)
        _check(op, "HcPost.out", self.out, (rows, hc, h), dtype, device)
        if self.f_out is not None:
            _check(op, "HcPost.f_out", self.f_out, (rows, h), dtype, device)

    def kernel_args(self) -> tuple:
        """(ep0, ep1, ep2, ep3, eps): the addresses ``epilogue_functions.finish`` takes."""
        from .launch_args import address  # a kernel module: imported once the Triton mode is fixed

        return (*map(address, (self.residual, self.post, self.comb, self.out)), 0.0)

    def vector_addresses(self) -> tuple:
        """Addresses of the tensors the kernels access by whole rows (their alignment bounds the
        kernels' vector width, ``launch_args.vector_align``)."""
        return tuple(t.data_ptr() for t in (self.residual, self.out, self.f_out) if t is not None)

    @property
    def hc(self) -> int:
        return self.residual.shape[1]

    def apply_torch(self, f: torch.Tensor) -> torch.Tensor:
        """The epilogue in torch on the float32 sums ``f`` [n, H] of the first n rows (world size 1
        and the NCCL fallback); returns ``out``."""
        n = f.shape[0]
        y = self.post[:n].unsqueeze(-1) * f.unsqueeze(1) + torch.einsum("tij,tih->tjh", self.comb[:n],
                                                                         self.residual[:n].float())
        self.out[:n].copy_(y)
        if self.f_out is not None:
            self.f_out[:n].copy_(f)
        return self.out

    @property
    def result(self) -> torch.Tensor:
        return self.out


@dataclass(frozen=True, eq=False)
class ResidualRMSNorm:
    """Residual add + RMSNorm fused into the combine (see the module docstring).

    residual: ``[rows, H]`` activation dtype. weight: ``[H]`` activation dtype. eps: float.
    out: ``[rows, H]``, written: ``rmsnorm(residual_out) * weight``; returned by the call.
    residual_out: ``[rows, H]``, written: ``f + residual`` rounded once (may be ``residual`` itself:
    updated in place, as FlashInfer's fused_add_rmsnorm does).
    f_out: optional ``[rows, H]``: also write ``f`` (rounded once).
    """

    residual: torch.Tensor
    weight: torch.Tensor
    eps: float
    out: torch.Tensor
    residual_out: torch.Tensor
    f_out: torch.Tensor | None = None

    code = RMSNORM
    row_tiles = True
    hc = 0

    @property
    def rows(self) -> int:
        return self.out.shape[0] if isinstance(self.out, torch.Tensor) and self.out.dim() else -1

    def check(self, op: str, hidden: int, rest: tuple, dtype: torch.dtype, device: torch.device, rows: int) -> None:
        if not isinstance(self.residual, torch.Tensor) or self.residual.dim() != 2:
            raise ValueError(f"{op}: ResidualRMSNorm.residual must be [rows, H]")
        if len(rest) != 1 or self.residual.shape[1] != hidden:
            raise ValueError(f"{op}: ResidualRMSNorm needs rows of H elements; got input rows {rest} and "
                             f"residual {tuple(self.residual.shape)}")
        if not isinstance(self.eps, float) or not self.eps >= 0.0:
            raise ValueError(f"{op}: ResidualRMSNorm.eps must be a float >= 0, got {self.eps!r}")
        _check(op, "ResidualRMSNorm.residual", self.residual, (rows, hidden), dtype, device)
        _check(op, "ResidualRMSNorm.weight", self.weight, (hidden,), dtype, device)
        _check(op, "ResidualRMSNorm.out", self.out, (rows, hidden), dtype, device)
        _check(op, "ResidualRMSNorm.residual_out", self.residual_out, (rows, hidden), dtype, device)
        if self.f_out is not None:
            _check(op, "ResidualRMSNorm.f_out", self.f_out, (rows, hidden), dtype, device)

    def apply_torch(self, f: torch.Tensor) -> torch.Tensor:
        """The epilogue in torch on the float32 sums ``f`` [n, H] of the first n rows (world size 1
        and the NCCL fallback); returns ``out``."""
        n = f.shape[0]
        s = (f + self.residual[:n].float()).to(self.out.dtype)
        x = s.float()
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight.float()
        self.residual_out[:n].copy_(s)
        self.out[:n].copy_(y)
        if self.f_out is not None:
            self.f_out[:n].copy_(f)
        return self.out

    def vector_addresses(self) -> tuple:
        return tuple(t.data_ptr() for t in (self.residual, self.weight, self.out, self.residual_out, self.f_out)
                     if t is not None)

    def kernel_args(self) -> tuple:
        from .launch_args import address  # a kernel module: imported once the Triton mode is fixed

        return (*map(address, (self.residual, self.weight, self.out, self.residual_out)), float(self.eps))

    @property
    def result(self) -> torch.Tensor:
        return self.out


EPILOGUES = (HcPost, ResidualRMSNorm)
NO_EPILOGUE_ARGS = (0, 0, 0, 0, 0.0)


def check_epilogue(epilogue, output, input_: torch.Tensor, call, op: str = "reduce_scatterv") -> None:
    """Host checks of ``epilogue`` against a validated ``call`` (``validation.Call``): its tensors'
    shapes (rows: ``sizes[rank]`` with host sizes, one capacity with device sizes: ``out``'s rows),
    dtypes, devices, contiguity; ``output`` must be None (an epilogue writes its own outputs;
    ``f_out`` asks for f)."""
    if not isinstance(epilogue, EPILOGUES):
        raise TypeError(f"{op}: epilogue must be one of {[e.__name__ for e in EPILOGUES]} or None, "
                        f"got {type(epilogue).__name__}")
    if output is not None:
        raise ValueError(f"{op}: with an epilogue, pass output=None (the epilogue writes its own outputs; "
                         f"set f_out to also get the sum)")
    epilogue.check(op, call.hidden, call.rest, input_.dtype, input_.device, call.out_rows)


def tag_facts(epilogue) -> tuple:
    """What the ranks must agree on about the epilogue (part of the call's digest): its kind and
    ``hc`` (the kind fixes the tile geometry)."""
    if epilogue is None:
        return ()
    return (100 + epilogue.code, epilogue.hc)


def constexprs(epilogue) -> dict:
    """The kernels' epilogue constexprs: EPILOGUE (0 none, 1 hc_post, 2 residual + RMSNorm), HC,
    ROWS (row tiles), WRITE_F (store f too)."""
    if epilogue is None:
        return dict(EPILOGUE=NONE, HC=1, ROWS=False, WRITE_F=True)
    return dict(EPILOGUE=epilogue.code, HC=max(1, epilogue.hc), ROWS=epilogue.row_tiles,
                WRITE_F=epilogue.f_out is not None)
