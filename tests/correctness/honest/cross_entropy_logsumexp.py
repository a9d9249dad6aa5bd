# problem: 95_CrossEntropyLoss
# kernelbench: 95
# rewrite: logsumexp of the logits minus the target logit, averaged
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, predictions, targets):
        picked = predictions.gather(1, targets.unsqueeze(1)).squeeze(1)
        return (torch.logsumexp(predictions, dim=1) - picked).mean()
