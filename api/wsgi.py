"""WSGI entry point for gunicorn: `gunicorn api.wsgi:app`."""

from api import create_app, gunicorn_errors
from shared.net.dryrun import dry_run
from shared.spec import JobSpec

app = create_app()
gunicorn_errors.install()  # gunicorn's own 400 / 414 / 431 answers as JSON too
# The first meta-device forward in a process imports torch._dynamo (about a second):
# pay it at boot, not in the first user's request.
dry_run(
    JobSpec.model_validate(
        {"model": {"preset": "lenet"}, "data": {"dataset": "digits", "image_size": 32}}
    )
)
