"""Developer and operator tooling: the local stack, production env, images, demos, the CLI."""
