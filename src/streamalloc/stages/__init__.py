"""The engine's stages on the runtime: intake, allocator, order stage (docs/architecture.md, Stages)."""
