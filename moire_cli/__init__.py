"""moire: lattice dynamics and melting of electronic and excitonic crystals in 2D moiré patterns."""

__version__ = "0.1.0"
