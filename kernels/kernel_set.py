"""The kernels and their launchers, imported only once the process knows its Triton mode."""

from .ll_kernel import fits as ll_fits
from .ll_kernel import ll_arguments
from .ll_kernel import launch as ll_launch
from .ll_kernel import reduce_scatterv_ll_kernel
from .launch_args import grid_size
from .reduce_scatterv_kernel import Variant, kernel_arguments, launch, reduce_scatterv_kernel

__all__ = ["ll_fits", "ll_arguments", "ll_launch", "reduce_scatterv_ll_kernel", "Variant", "grid_size",
           "kernel_arguments", "launch", "reduce_scatterv_kernel"]
