"""Finding, loading and configuring plugins: entry points, the registry, plugin
options and presets. Internal to bench."""
