"""Context parallelism: DeltaFormer and the delta rule with the sequence split across torch.distributed ranks.

Each rank passes its contiguous shard of the sequence (shards in rank order, lengths may differ) and gets its shard
of the result, the same as the single-process ``impl`` op on the whole sequence. See docs/context_parallel.md.
"""

from impl.distributed.delta_rule import delta_rule
from impl.distributed.deltaformer import deltaformer_attn

__all__ = ["delta_rule", "deltaformer_attn"]
