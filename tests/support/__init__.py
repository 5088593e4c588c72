"""Test support shared by several test modules: example specs, spec builders, a recording
callback, trace-row checks. Plain modules (test modules never import each other); helpers
that need a fixture (a client, a database) are fixtures in the conftest.py files."""
