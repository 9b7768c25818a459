"""An example bench plugin package: the ``gaussian-noise`` attack, the ``input-quantization``
and ``trades`` defenses. Each module is one plugin, declared in the ``advbench.plugins``
entry-point group."""
