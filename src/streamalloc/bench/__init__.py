"""Benchmarks behind `streamalloc bench`: they print figures; tests never time anything."""
