"""`trainyard compose-gpus`: a compose override with one GPU worker per extra GPU."""

from __future__ import annotations

import click

HEADER = """\
# GPU workers 1..{last}, one process per GPU (worker-gpu-0 is in docker-compose.yml).
# Written by `trainyard compose-gpus --count {count}`. Use it with:
#   docker compose -f docker-compose.yml -f compose.gpus.yml --profile gpu up -d
services:
"""
# Each extends the CPU worker (same settings, volumes, healthcheck, grace period), which
# reserves no device: `extends` appends device lists, so the one GPU given here is its only.
SERVICE = """\
  worker-gpu-{index}:
    extends: {{file: docker-compose.yml, service: worker-cpu}}
    profiles: [gpu]
    command: ["trainyard", "worker", "--gpu"]
    deploy:
      resources:
        reservations:
          devices: [{{driver: nvidia, device_ids: ["{index}"], capabilities: [gpu]}}]
"""


def gpu_override(count: int) -> str:
    """The override's text for a host with `count` GPUs (at least 2)."""
    body = "".join(SERVICE.format(index=index) for index in range(1, count))
    return HEADER.format(last=count - 1, count=count) + body


@click.command("compose-gpus")
@click.option("--count", type=click.IntRange(2, 64), required=True, help="GPUs on the host.")
def compose_gpus(count: int) -> None:
    """Print a compose override adding worker-gpu-1 .. worker-gpu-(COUNT-1)."""
    click.echo(gpu_override(count), nl=False)


COMMANDS = (compose_gpus,)
