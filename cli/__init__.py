"""The ``mel`` command line: above the flows (it starts them) and the core (``mel``, which imports none of this)."""
