"""`trainyard` command-line entry point."""

from __future__ import annotations

import click

from cli.commands import checkpoints, cluster, jobs, models, results, service, sweeps


@click.group()
def main() -> None:
    """Trainyard: train PyTorch models as jobs over HTTP."""


for module in (service, cluster, jobs, results, checkpoints, models, sweeps):
    for command in module.COMMANDS:
        main.add_command(command)


if __name__ == "__main__":
    main()
