"""clickrec test suite (unit, integration, ...); fixtures live in tests/services.py."""
