"""Benchmarks of reduce_scatterv against NCCL under CUDA-graph replay, and the autotune sweep."""
