"""The data order, which must not depend on the batch size: each epoch's shuffling, from an explicit seed.

It has its own fold-in tag, so the data-order stream stays independent of the initialisation stream
(:func:`batchlab.models.jax.replica_keys`) even for equal seeds; every backend (JAX and PyTorch) sees the same
order.
"""

from __future__ import annotations

import jax

ORDER_TAG = 1
"""fold-in tag of the data-order stream (the initialisation stream uses 0)."""


def epoch_permutation(order_seed: int | jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The shuffling of epoch `epoch` (1-based): a function of the order seed and epoch only, not the batch size."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(order_seed), ORDER_TAG), epoch)
    return jax.random.permutation(key, n)
