"""A seeded, bounded fuzzer for clusterdns: see fuzz.py."""
