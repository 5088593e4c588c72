"""Celery workers: claim a job row, train it with plain PyTorch, persist what it produced."""
