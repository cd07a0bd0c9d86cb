"""What train.py calls besides the components: config checks, checkpoints, metric sinks, distributed setup."""
