"""The `trainyard` command: run the service, manage tokens, submit and watch jobs."""
