"""DeepSeek V4's MoE block under DP attention + TP MoE, with the fused gather, combine and hc_post.

    python -m deepseek_v4 --world-size 3 --tokens 0,5,2 --combine fused
"""

from .config import PRESETS, V4Config, preset
from .mhc import hc_post, hc_pre, sinkhorn
from .moe import moe, route, swiglu
from .post_path import COMBINES, combine_post, communication, dp_gather, moe_block, reference_block
from .weights import LayerWeights, shard_chunks

__all__ = ["PRESETS", "V4Config", "preset", "hc_pre", "hc_post", "sinkhorn", "moe", "route", "swiglu", "COMBINES",
           "combine_post", "communication", "dp_gather", "moe_block", "reference_block", "LayerWeights", "shard_chunks"]
