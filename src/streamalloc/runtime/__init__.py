"""The stream processor: stages, state stores, changelogs, restoration, the commit protocol."""
