"""Example job specs shipped with the CLI (the README shows the same files)."""
