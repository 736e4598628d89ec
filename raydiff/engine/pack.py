"""The pack container: K SimpleNNs of one architecture as stacked parameter tensors.

``weights[l]`` of a :class:`Pack` is (K, out_l, in_l): model k's layer l is row k. The
forward pass of all K models is one computation (layer 1 of a shared input is one GEMM
for all K; the layers above are ``bmm`` over the K axis); a model goes in and out as an
ordinary :class:`~raydiff.models.SimpleNN`. Training lives in
:mod:`raydiff.engine.pack_step` (one step) and :mod:`raydiff.engine.pack_train` (epochs).
"""

import numpy as np
import torch

from raydiff.models import SimpleNN, get_model


class Pack:
    """K :class:`~raydiff.models.SimpleNN` s with stacked parameters.

    ``weights[l]`` is (K, out_l, in_l), ``biases[l]`` (K, out_l), for the tanh layers
    ``l = 0 .. L-1`` and the output layer last (``len(weights) == len(hidden) + 1``): model
    k's ``hidden[l].weight`` is ``weights[l][k]``, its ``out.weight`` is ``weights[-1][k]``.
    Every tensor is contiguous and on one device. A pack is plain tensors, not a Module:
    nothing here goes through autograd.
    """

    def __init__(self, weights, biases):
        if len(weights) != len(biases) or len(weights) < 2:
            raise ValueError("a pack needs weights and biases of >= 2 layers (hidden + out)")
        k = weights[0].shape[0]
        for w, b in zip(weights, biases):
            if w.dim() != 3 or b.shape != (k, w.shape[1]) or w.shape[0] != k:
                raise ValueError(f"pack layer shapes disagree: weight {tuple(w.shape)}, "
                                 f"bias {tuple(b.shape)}, K = {k}")
        self.weights = [w.detach().contiguous() for w in weights]
        self.biases = [b.detach().contiguous() for b in biases]

    # -- building and unstacking ------------------------------------------------------

    @classmethod
    def from_models(cls, models):
        """Stack K SimpleNNs of one architecture (copies; the models are left alone)."""
        models = list(models)
        if not models:
            raise ValueError("a pack needs at least one model")
        shape = _architecture(models[0])
        for m in models:
            if type(m) is not SimpleNN or _architecture(m) != shape:
                raise ValueError(f"every model of a pack must be a SimpleNN of one "
                                 f"architecture {shape}; got {type(m).__name__} "
                                 f"{_architecture(m) if isinstance(m, SimpleNN) else ''}")
        with torch.no_grad():
            per_model = [_layers(m) for m in models]
            weights = [torch.stack([layers[l].weight for layers in per_model])
                       for l in range(len(per_model[0]))]
            biases = [torch.stack([layers[l].bias for layers in per_model])
                      for l in range(len(per_model[0]))]
        return cls(weights, biases)

    @classmethod
    def view_of(cls, model):
        """A pack of one whose tensors are views of ``model``'s parameters (no copy):
        updating the pack in place trains the model. How the single engine runs the
        SimpleNN step of :mod:`raydiff.engine.pack_step` on one model."""
        if type(model) is not SimpleNN:
            raise ValueError(f"Pack.view_of needs a plain SimpleNN, got {type(model).__name__}")
        layers = _layers(model)
        return cls([l.weight.detach()[None] for l in layers],
                   [l.bias.detach()[None] for l in layers])

    @classmethod
    def init(cls, seeds, *, input_shape, num_classes, hidden=(20, 20), device="cpu"):
        """The pack of ``get_model("simple_nn", ..., seed=s)`` for every seed of ``seeds``:
        model k starts from exactly the weights the single-model engine's model would."""
        models = [get_model("simple_nn", input_shape=input_shape, num_classes=num_classes,
                            hidden=tuple(hidden), seed=int(s)) for s in seeds]
        return cls.from_models(models).to(device)

    def model(self, k):
        """Model ``k`` as an ordinary SimpleNN (a copy, on the pack's device)."""
        m = SimpleNN(self.in_features, self.num_classes, hidden=self.hidden)
        m.load_state_dict(self.state_of(k))
        return m.to(self.device)

    def state_of(self, k):
        """The ``state_dict`` (copied tensors) model ``k`` has as a SimpleNN."""
        state = {}
        for i in range(len(self.hidden)):
            state[f"hidden.{i}.weight"] = self.weights[i][k].clone()
            state[f"hidden.{i}.bias"] = self.biases[i][k].clone()
        state["out.weight"] = self.weights[-1][k].clone()
        state["out.bias"] = self.biases[-1][k].clone()
        return state

    def to(self, device):
        self.weights = [w.to(device) for w in self.weights]
        self.biases = [b.to(device) for b in self.biases]
        return self

    def clone(self):
        return Pack([w.clone() for w in self.weights], [b.clone() for b in self.biases])

    def select(self, models):
        """A new pack of the models at positions ``models`` (copies)."""
        idx = torch.as_tensor(list(models), dtype=torch.long, device=self.device)
        return Pack([w.index_select(0, idx) for w in self.weights],
                    [b.index_select(0, idx) for b in self.biases])

    @property
    def params(self):
        """Every parameter tensor, weight and bias per layer, in layer order."""
        return [p for wb in zip(self.weights, self.biases) for p in wb]

    def flat(self):
        """(K, P) copy of all parameters, model k's row in :meth:`params` order."""
        return torch.cat([p.reshape(self.k, -1) for p in self.params], 1)

    def load_flat(self, flat):
        """Set all parameters from a (K, P) tensor of :meth:`flat`'s layout."""
        at = 0
        for p in self.params:
            size = p[0].numel()
            p.copy_(flat[:, at:at + size].reshape(p.shape))
            at += size

    def state_dict(self):
        return {"weights": [w.clone() for w in self.weights],
                "biases": [b.clone() for b in self.biases]}

    def load_state_dict(self, state):
        for p, q in zip(self.params, [t for wb in zip(state["weights"], state["biases"])
                                      for t in wb]):
            p.copy_(q)

    @property
    def k(self):
        return self.weights[0].shape[0]

    def __len__(self):
        return self.k

    @property
    def device(self):
        return self.weights[0].device

    @property
    def in_features(self):
        return self.weights[0].shape[2]

    @property
    def hidden(self):
        return tuple(w.shape[1] for w in self.weights[:-1])

    @property
    def num_classes(self):
        return self.weights[-1].shape[1]

    # -- forward ------------------------------------------------------------------------

    def activations(self, x, *, per_model=False):
        """The tanh activations of every hidden layer and the logits.

        x : (N, ...) shared by all models, or with ``per_model`` (K, B, D): one batch per
            model. Returns ``(acts, logits)``: acts[l] is (K, N, H_l), logits (K, N, C).
        """
        k = self.k
        w1, b1 = self.weights[0], self.biases[0]
        if per_model:
            h = torch.tanh(torch.baddbmm(b1[:, None], x, w1.transpose(1, 2)))
        else:
            x = x.flatten(1)
            n, h1 = len(x), w1.shape[1]
            # one GEMM for all K: (N x D) @ (D x H1*K), then the per-model slices
            a = torch.addmm(b1.reshape(-1), x, w1.reshape(k * h1, -1).t())
            # per-model rows made contiguous once: the layers above and the backward pass
            # read them several times, and strided reads cost more than this copy
            h = torch.tanh(a).view(n, k, h1).transpose(0, 1).contiguous()
        acts = [h]
        for w, b in zip(self.weights[1:-1], self.biases[1:-1]):
            acts.append(torch.tanh(torch.baddbmm(b[:, None], acts[-1], w.transpose(1, 2))))
        logits = torch.baddbmm(self.biases[-1][:, None], acts[-1],
                               self.weights[-1].transpose(1, 2))
        return acts, logits

    def features_and_logits(self, x):
        """(first hidden layer after tanh (K, N, H1), logits (K, N, C)) of shared x (N, ...)."""
        acts, logits = self.activations(x.flatten(1))
        return acts[0], logits

    def __call__(self, x):
        return self.activations(x)[1]


def _layers(model):
    """A SimpleNN's linear layers in order: the tanh layers, then the output layer."""
    return [*model.hidden, model.out]


def _architecture(model):
    return (model.hidden[0].in_features, tuple(l.out_features for l in model.hidden),
            model.out.out_features)


@torch.no_grad()
def predict_packed(pack, x, *, batch_size=8192):
    """Logits (K, N, C) of every model of ``pack`` for every row of ``x`` (N, ...), in
    no-grad batches of ``batch_size`` rows (each batch one layer-1 GEMM for all K)."""
    x = x.flatten(1)
    parts = [pack.activations(x[i:i + batch_size])[1] for i in range(0, len(x), batch_size)]
    return torch.cat(parts, 1) if parts else pack.activations(x)[1]


def subset_rows(subsets, k, n):
    """Each model's training rows as K entries: None (all ``n`` rows) or a 1-d long CPU
    tensor of indices into x, in the order given (the order the single engine would see
    ``x[subset]`` in). ``subsets`` is None (every model on every row) or K entries."""
    if subsets is None:
        return [None] * k
    if len(subsets) != k:
        raise ValueError(f"subsets: expected {k} entries (one per model), got {len(subsets)}")
    out = []
    for s in subsets:
        if s is None:
            out.append(None)
            continue
        s = torch.as_tensor(np.asarray(s), dtype=torch.long).cpu()
        if s.dim() != 1 or (len(s) and (int(s.min()) < 0 or int(s.max()) >= n)):
            raise ValueError(f"subsets: every entry must be None or 1-d indices in [0, {n})")
        out.append(s)
    return out
