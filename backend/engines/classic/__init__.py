"""The ``classic`` engine: CPU only, no model weights, deterministic.

Units, in the order a region passes through them:

* :mod:`.native` -- the photo's own pixels behind an enlarged focus crop;
* :mod:`.registration` -- registering a reference onto the crop and deciding whether to trust it;
* :mod:`.transfer` -- the registered reference resampled and tone-matched into the region;
* :mod:`.damage` -- measuring the damage of a region without a reference (blur, blocking,
  missing high frequencies, noise);
* :mod:`.restore` -- the reference-free restoration that applies what the measurements call for;
* :mod:`.engine` -- the engine class that ties them together.
"""

from .engine import ClassicEngine

__all__ = ["ClassicEngine"]
