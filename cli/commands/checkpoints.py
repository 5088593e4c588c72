"""Client commands on a job's checkpoints: download a state_dict, verified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from cli.options import client_options, make_client


def verified(content: bytes, expected_sha256: str) -> bytes:
    """`content` if its sha256 is the one the API stored, else an error (nothing is written)."""
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected_sha256:
        raise click.ClickException(
            f"sha256 mismatch: got {actual}, the checkpoint's is {expected_sha256}; not saved"
        )
    return content


@click.command("download")
@click.argument("job_id")
@click.option(
    "--checkpoint", default="final", show_default=True, help="final, best, latest or an id."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@client_options
def download_cmd(job_id: str, checkpoint: str, output: Path | None, url: str, token: str) -> None:
    """Save a checkpoint's state_dict as safetensors, checked against its sha256."""
    client = make_client(url, token)
    resp = client.request("GET", f"/api/v1/jobs/{job_id}/checkpoints/{checkpoint}/state_dict")
    content = verified(resp.content, resp.headers["X-Checkpoint-Sha256"])
    name = resp.headers.get("Content-Disposition", "").partition('filename="')[2].rstrip('"')
    # Only the file name: a server's "../x" must not choose where we write.
    path = output or Path(Path(name).name or f"{job_id}.safetensors")
    path.write_bytes(content)
    click.echo(
        f"{path}  {len(content):,} bytes  sha256 {resp.headers['X-Checkpoint-Sha256']} (verified)"
    )


COMMANDS = (download_cmd,)
