# problem: scale
# expect: rejected background_thread
# why: defers the real work to a thread (reached through logging, so the static import ban misses it)
import logging


class ModelNew(Model):
    def forward(self, x):
        out = torch.empty(x.shape[0], self.lin.out_features)
        def work():
            logging.threading.Event().wait(0.2)
            out.copy_(super(ModelNew, self).forward(x))
        logging.threading.Thread(target=work).start()
        return out
