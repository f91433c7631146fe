"""Knowledge distillation: the KD losses and the Transformer layers they read."""
