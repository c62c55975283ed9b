"""The JAX backend (Flax NNX + optax): ``pip install 'vaebench[jax]'``.

Nothing here is imported by vaebench itself; ``vaebench.plugins.backends``
names ``backend:JaxBackend`` by import path and loads it only when a run asks
for ``--backend jax``.
"""
