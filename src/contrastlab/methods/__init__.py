"""The methods a scenario chooses by name: losses, augmentations, encoder heads and baselines (registries)."""
