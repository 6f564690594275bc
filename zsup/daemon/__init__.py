"""zsupd's body: config, commands, store, webhooks, plugins."""
