"""The seal moved to :mod:`advbench.seal` (public: the conformance kit runs attacks under it)."""

from __future__ import annotations

# re-export until driver/worker import from advbench.seal
from advbench.seal import Pristine, Seal, SealBroken, fingerprint, listed

__all__ = ["Pristine", "Seal", "SealBroken", "fingerprint", "listed"]
