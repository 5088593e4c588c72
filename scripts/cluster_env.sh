#!/usr/bin/env bash
# Write .env for the compose cluster from .env.example, giving every empty secret a new
# random value. Leaves an existing .env alone (delete it first to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -e .env ]; then
    echo ".env exists; left as it is" >&2
    exit 0
fi
umask 077
python3 - <<'PY'
import re
import secrets
from pathlib import Path

lines = []
for line in Path(".env.example").read_text().splitlines():
    # KEY= with nothing after it is a secret to fill; URL-safe, so it fits inside URLs.
    if re.fullmatch(r"[A-Z_]+=", line):
        line += secrets.token_urlsafe(24)
    lines.append(line)
Path(".env").write_text("\n".join(lines) + "\n")
PY
echo "wrote .env (mode 600) with new secrets" >&2
