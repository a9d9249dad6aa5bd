# problem: builtin:attention_causal
# bug: the causal mask starts one place late: each query also sees the next key
import math


class ModelNew(Model):
    def forward(self, q, k, v):
        seq = q.shape[-2]
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=2)
        return torch.matmul(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1), v)
