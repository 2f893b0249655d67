"""Book-keeping clipping: per-sample clipping at the cost of one plain backward pass.

For a linear layer with input rows ``a_i`` and output gradients ``b_i`` (per-sample loss, sum
reduction), record ``i``'s weight gradient is ``b_i a_i^T``: its norm is ``|b_i| |a_i|`` and the
sum of the *clipped* gradients is ``(c * B)^T A`` with ``c_i = min(1, C / |g_i|)``. So one
backward pass that keeps ``A`` and ``B`` of every layer (and skips the weight gradients autograd
would compute) gives the exact clipped sum: no second backward pass (ghost clipping) and no
per-sample gradient tensors (hooks). This is the book-keeping trick of Bu et al., "Differentially
Private Optimization on Large Model at Small Cost" (ICML 2023), for 2-D inputs.

Noise, scaling by the expected batch size and the accountant stay Opacus': the clipped sum is
placed in ``p.grad`` and stepped by Opacus' ``DPOptimizerFastGradientClipping`` (or its
distributed variant), exactly as Opacus' ghost clipping does after its second pass.

Supported models: an ``nn.Linear``, or an ``nn.Sequential`` whose children are ``nn.Linear`` or
hold no parameters (activations, dropout, flatten) — the runtime's LogisticRegression and Mlp.
The clipping factor is Opacus' own, ``min(1, C / (norm + 1e-6))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def supports(model: nn.Module) -> bool:
    """Return whether book-keeping clipping can train ``model`` exactly."""
    from torch import nn

    if isinstance(model, nn.Linear):
        return True
    if type(model) is not nn.Sequential:
        return False
    for child in model:
        if isinstance(child, nn.Linear):
            continue
        if any(True for _ in child.parameters()):
            return False
    params = [id(p) for child in model if isinstance(child, nn.Linear) for p in child.parameters()]
    # A reused layer or tied weights: a record's gradient is then a sum over uses, whose norm
    # is not the sum of the per-layer norms this method computes.
    return bool(params) and len(params) == len(set(params))


def _linear_fn() -> Any:
    import torch

    class KeepLinear(torch.autograd.Function):
        """``F.linear`` whose backward records (input, output gradient) instead of dW, db."""

        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, bias: Any, store: list[Any]) -> Any:
            ctx.save_for_backward(x, weight)
            ctx.store = store
            return torch.nn.functional.linear(x, weight, bias)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            x, weight = ctx.saved_tensors
            ctx.store.append((x, grad_out))
            grad_in = grad_out @ weight if ctx.needs_input_grad[0] else None
            return grad_in, None, None, None

    return KeepLinear


class BookkeepingClipper:
    """Runs a supported model and turns one backward pass into the clipped gradient sum.

    Parameters
    ----------
    model
        A model for which :func:`supports` holds.
    max_grad_norm
        The clipping norm ``C``.

    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        from torch import nn

        if not supports(model):
            raise ValueError("book-keeping clipping supports Linear layers in a Sequential only")
        self.model = model
        self.layers = [model] if isinstance(model, nn.Linear) else list(model)
        self.linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        self.max_grad_norm = max_grad_norm
        self._fn = _linear_fn()
        self._store: list[Any] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model, recording what the clipped gradients need."""
        from torch import nn

        self._store = []
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                x = self._fn.apply(x, layer.weight, layer.bias, self._store)
            else:
                x = layer(x)
        return x

    def backward(self, per_sample_loss: torch.Tensor) -> torch.Tensor:
        """Back-propagate the summed loss and set ``p.grad`` to the sum of clipped gradients.

        Returns
        -------
        torch.Tensor
            The per-sample gradient norms (before clipping).

        """
        import torch

        per_sample_loss.sum().backward()
        # Backward visits the layers last to first.
        records = list(reversed(self._store))
        self._store = []
        if len(records) != len(self.linears):
            raise RuntimeError("book-keeping clipping expected one record per Linear layer")
        sq_norms = None
        for layer, (a, b) in zip(self.linears, records, strict=True):
            a, b = a.float(), b.float()
            a_sq, b_sq = a.pow(2).sum(1), b.pow(2).sum(1)
            layer_sq = a_sq * b_sq + (b_sq if layer.bias is not None else 0)
            sq_norms = layer_sq if sq_norms is None else sq_norms + layer_sq
        assert sq_norms is not None
        norms = sq_norms.sqrt()
        factors = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for layer, (a, b) in zip(self.linears, records, strict=True):
            scaled = b.float() * factors[:, None]
            layer.weight.grad = (scaled.t() @ a.float()).to(layer.weight.dtype)
            if layer.bias is not None:
                layer.bias.grad = scaled.sum(0).to(layer.bias.dtype)
        with torch.no_grad():
            return norms
