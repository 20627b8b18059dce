"""The kernels and their launchers, imported only once the process knows its Triton mode."""

from .ll_kernel import fits as ll_fits
from .ll_kernel import ll_arguments
from .ll_kernel import launch as ll_launch
from .ll_kernel import reduce_scatterv_ll_kernel
from .reduce_scatterv_kernel import Variant, grid_size, kernel_arguments, launch, reduce_scatterv_kernel

__all__ = ["ll_fits", "ll_arguments", "ll_launch", "reduce_scatterv_ll_kernel", "Variant", "grid_size", "kernel_arguments",
           "launch", "reduce_scatterv_kernel"]
