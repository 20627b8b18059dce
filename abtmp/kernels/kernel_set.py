"""The kernels and their launchers, imported only once the process knows its Triton mode."""

from .all_gatherv_kernel import all_gatherv_kernel
from .all_gatherv_kernel import arguments as gather_arguments
from .all_gatherv_kernel import launch as gather_launch
from .all_gatherv_ll_kernel import all_gatherv_ll_kernel
from .all_gatherv_ll_kernel import arguments as gather_ll_arguments
from .all_gatherv_ll_kernel import fits as gather_ll_fits
from .all_gatherv_ll_kernel import launch as gather_ll_launch
from .hop_kernel import finish as hop_finish
from .hop_kernel import fault as hop_fault
from .hop_kernel import gather_check as hop_gather_check
from .hop_kernel import gather_copy as hop_gather_copy
from .hop_kernel import prologue as hop_prologue
from .launch_args import grid_size, rounds_fit
from .push_kernel import destination_bytes, push_arguments, reduce_scatterv_push_kernel
from .push_kernel import fits as push_fits
from .push_kernel import launch as push_launch
from .reduce_scatterv_kernel import Variant, kernel_arguments, launch, reduce_scatterv_kernel

__all__ = ["all_gatherv_kernel", "gather_arguments", "gather_launch", "all_gatherv_ll_kernel", "gather_ll_arguments",
           "gather_ll_fits", "gather_ll_launch", "hop_finish", "hop_fault", "hop_gather_check",
           "hop_gather_copy", "hop_prologue", "destination_bytes", "push_fits", "push_arguments",
           "push_launch", "reduce_scatterv_push_kernel", "Variant", "grid_size", "rounds_fit",
           "kernel_arguments", "launch", "reduce_scatterv_kernel"]
