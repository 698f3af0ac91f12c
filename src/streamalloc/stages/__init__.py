"""The engine's stages on the runtime: intake, allocator, order stage (DESIGN.md, Stages)."""
