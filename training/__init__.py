"""What train.py calls besides the components: config checks, checkpoints, metric sinks, distributed set-up.

Importing it registers the config resolvers the YAML files use (``${unless_budget:…}``)."""

from training.resolvers import register as _register_resolvers

_register_resolvers()
