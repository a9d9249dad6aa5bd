# problem: relu_where
# expect: runtime_error
# why: writes into the results folder and the evaluator cache (paths filled in by the test)
import os


class ModelNew(Model):
    def forward(self, x):
        for folder in __FORBIDDEN__:
            with open(os.path.join(folder, "pwned.txt"), "w") as f:
                f.write("candidate was here")
        return super().forward(x)
