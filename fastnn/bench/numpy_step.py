"""The training step a careful NumPy user writes: the baseline of the training targets.

No layer objects, no framework: preallocated buffers, ``np.matmul(..., out=...)``,
in-place ufuncs, a numerically stable softmax.  It is deliberately *not* fastnn's NumPy
backend (which allocates per call and goes through the model's layers), because racing
that would flatter fastnn.  ``tests/test_bench.py`` checks that it computes the same
gradients and the same update as a fastnn model on the same weights.
"""
import numpy as np


class NumpyMLPStep:
    """One SGD-momentum step of a ReLU MLP with softmax cross-entropy, in plain NumPy.

    With ``h_0 = x`` of shape (B, n_0) and layers ``l = 1..L`` of weights ``W_l``
    (n_{l-1}, n_l) and biases ``b_l`` (n_l,)::

        z_l = h_{l-1} @ W_l + b_l,   h_l = max(z_l, 0) (l < L),   logits = z_L
        loss = mean_i [ log sum_j exp(z_ij) - z_{i, y_i} ]          (integer labels y)
        dz_L = (softmax(z_L) - onehot(y)) / B
        dW_l = h_{l-1}.T @ dz_l,   db_l = sum_i dz_l,   dz_{l-1} = (dz_l @ W_l.T) * [h_{l-1} > 0]
        v = momentum * v + g,   p = p - lr * v                       (for every W_l, b_l)

    which is :class:`fastnn.SGD` (and ``torch.optim.SGD``) with momentum, no weight decay.

    Parameters
    ----------
    weights, biases : sequences of arrays
        ``W_l`` (n_{l-1}, n_l) and ``b_l`` (n_l,), all of one float dtype; copied.
    batch : int
        The batch size B the buffers are allocated for.
    lr, momentum : float
        Learning rate and momentum coefficient.

    Attributes
    ----------
    weights, biases, weight_velocity, bias_velocity : lists of arrays
        The parameters and momentum buffers, updated in place by every step.
    weight_grads, bias_grads : lists of arrays
        The gradients of the last step.
    """

    def __init__(self, weights, biases, batch, lr=1e-3, momentum=0.9):
        dtype = np.dtype(weights[0].dtype)
        self.weights = [np.array(w, dtype, order="C", copy=True) for w in weights]
        self.biases = [np.array(b, dtype, copy=True) for b in biases]
        # dtype scalars, so that in-place float32 updates stay float32 throughout
        self.lr, self.momentum = dtype.type(lr), dtype.type(momentum)
        widths = [w.shape[1] for w in self.weights]
        self.batch = batch
        # z_l, turned into h_l = max(z_l, 0) in place for the hidden layers
        self.activations = [np.empty((batch, n), dtype) for n in widths]
        self.relu_masks = [np.empty((batch, n), bool) for n in widths[:-1]]
        # dz_l; the last one holds d(loss)/d(logits)
        self.deltas = [np.empty((batch, n), dtype) for n in widths]
        self.weight_grads = [np.empty_like(w) for w in self.weights]
        self.bias_grads = [np.empty_like(b) for b in self.biases]
        self.weight_velocity = [np.zeros_like(w) for w in self.weights]
        self.bias_velocity = [np.zeros_like(b) for b in self.biases]
        # lr * v, before it is subtracted (ufuncs cannot fuse the two)
        self._weight_steps = [np.empty_like(w) for w in self.weights]
        self._bias_steps = [np.empty_like(b) for b in self.biases]
        self._row = np.empty((batch, 1), dtype)           # row max, then row sum
        self._rows = np.arange(batch)

    def __call__(self, x, labels):
        """One step on ``x`` (B, n_0) and integer ``labels`` (B,); returns the mean loss
        (before the update)."""
        logits = self.forward(x)
        loss = self.loss_and_grad(logits, labels)
        self.backward_and_update(x)
        return loss

    def forward(self, x):
        """``logits = z_L`` (B, n_L); keeps every ``h_l`` for the backward pass."""
        h = x
        last = len(self.weights) - 1
        for layer, (w, b, z) in enumerate(zip(self.weights, self.biases, self.activations)):
            np.matmul(h, w, out=z)
            z += b
            if layer < last:
                np.maximum(z, 0, out=z)
                np.greater(z, 0, out=self.relu_masks[layer])
            h = z
        return h

    def loss_and_grad(self, logits, labels):
        """Mean softmax cross-entropy of ``logits`` (B, C); writes ``dz_L`` =
        ``(softmax(logits) - onehot(labels)) / B`` into ``self.deltas[-1]``."""
        grad, row, rows = self.deltas[-1], self._row, self._rows
        np.max(logits, axis=1, keepdims=True, out=row)
        np.subtract(logits, row, out=grad)              # s = z - max z <= 0: exp cannot overflow
        picked = grad[rows, labels]                     # s_{i, y_i}, a (B,) copy
        np.exp(grad, out=grad)
        np.sum(grad, axis=1, keepdims=True, out=row)
        # log sum_j exp(s_ij) >= 0, so the loss never takes the log of an underflowed 0
        loss = float(np.mean(np.log(row[:, 0]) - picked))
        row *= self.batch                               # fold 1/B into the normalisation
        grad /= row
        grad[rows, labels] -= grad.dtype.type(1.0 / self.batch)
        return loss

    def backward_and_update(self, x):
        """Gradients of every layer from ``self.deltas[-1]`` back to the first, each
        layer's parameters updated as soon as its weights are no longer needed."""
        for layer in range(len(self.weights) - 1, -1, -1):
            dz = self.deltas[layer]
            h_prev = x if layer == 0 else self.activations[layer - 1]
            np.matmul(h_prev.T, dz, out=self.weight_grads[layer])
            np.sum(dz, axis=0, out=self.bias_grads[layer])
            if layer > 0:
                dh = self.deltas[layer - 1]
                np.matmul(dz, self.weights[layer].T, out=dh)
                dh *= self.relu_masks[layer - 1]          # ReLU'(z) = [h > 0]
            # W_l has served dz_{l-1}: update it now, while its gradient is in cache
            self._momentum_update(self.weights[layer], self.weight_grads[layer],
                                  self.weight_velocity[layer], self._weight_steps[layer])
            self._momentum_update(self.biases[layer], self.bias_grads[layer],
                                  self.bias_velocity[layer], self._bias_steps[layer])

    def _momentum_update(self, param, grad, velocity, step):
        """``v = momentum * v + g``; ``p -= lr * v`` (all in place)."""
        velocity *= self.momentum
        velocity += grad
        np.multiply(velocity, self.lr, out=step)
        param -= step
