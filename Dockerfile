# One image for the API, the workers, the sweeper and the migration step; they differ by command.
# The pinned torch wheel from PyPI carries its CUDA libraries, so the same image trains on a
# GPU when the container runtime exposes one (NVIDIA container toolkit), and on the CPU otherwise.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TRAINYARD_HOME=/var/lib/trainyard
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first so code edits do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p api worker shared cli/examples && touch api/__init__.py worker/__init__.py \
        shared/__init__.py cli/__init__.py cli/examples/__init__.py \
    && pip install '.[cluster]' && pip uninstall -y trainyard
COPY . .
RUN pip install --no-deps -e . && useradd --system --home /var/lib/trainyard trainyard \
    && mkdir -p /var/lib/trainyard && chown trainyard /var/lib/trainyard
USER trainyard
EXPOSE 8000
CMD ["gunicorn", "-b", "0.0.0.0:8000", "-w", "2", "--threads", "4", "api.wsgi:app"]
