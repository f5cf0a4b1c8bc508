"""Scale-out: shots generated on a Ray cluster, one model-holding actor per device (``ray_pool``)."""
