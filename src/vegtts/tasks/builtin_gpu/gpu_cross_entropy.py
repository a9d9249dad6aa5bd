"""Cross-entropy with integer class targets, written out (GPU problem)

log-softmax, gather of the target column and mean as separate ops.  The targets are int64 and
must stay int64 (KernelBench's harness casts every input to float, which breaks this kind of
problem); the evaluator sends inputs with their own dtypes.
"""

import torch
import torch.nn as nn

TAGS = ["gpu", "reduction", "loss", "integer-inputs"]

BATCH = 8192
CLASSES = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        shifted = logits - logits.max(dim=-1, keepdim=True).values
        log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
        picked = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        return -picked.mean()


def get_inputs():
    return [torch.randn(BATCH, CLASSES) * 2.0, torch.randint(0, CLASSES, (BATCH,))]


def get_init_inputs():
    return []
