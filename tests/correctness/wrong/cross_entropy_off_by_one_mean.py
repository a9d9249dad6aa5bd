# problem: 95_CrossEntropyLoss
# kernelbench: 95
# bug: the mean divides by batch - 1
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, predictions, targets):
        losses = torch.nn.functional.cross_entropy(predictions, targets, reduction="none")
        return losses.sum() / (losses.numel() - 1)
