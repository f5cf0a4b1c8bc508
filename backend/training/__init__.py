"""Training of the default previs model: procedural data, the training loop, and what it ships."""
