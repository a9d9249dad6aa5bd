# Hand-written faster solution for builtin task "attention_causal".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
