# problem: builtin:attention_causal
# rewrite: F.scaled_dot_product_attention with is_causal
class ModelNew(Model):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
