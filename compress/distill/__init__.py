"""Knowledge distillation: the KD losses, the Transformer layers they read, and synthetic data
from a teacher (BN inversion) for data-free distillation."""
