"""The fault scenarios: each breaks one piece of a running cluster and measures what held.

A scenario takes a started Cluster (tests/chaos/cluster.py), leaves it reset for the next
one, and returns an Outcome: the fault, what must hold, the figures measured and the
problems found (none when everything held). The tests assert on the problems; the bench
(bench/chaos.py) prints the figures.
"""

from tests.chaos.scenarios.broker import backlog, kill_redis
from tests.chaos.scenarios.common import SPEC, STEPS, TINY, Outcome, Reference, reference
from tests.chaos.scenarios.distributed import kill_gang_node
from tests.chaos.scenarios.scheduling import fair_share
from tests.chaos.scenarios.servers import api_kill, disk_full, postgres_outage
from tests.chaos.scenarios.workers import duplicate_message, kill_worker, term_worker

__all__ = [
    "SPEC",
    "STEPS",
    "TINY",
    "Outcome",
    "Reference",
    "api_kill",
    "backlog",
    "disk_full",
    "duplicate_message",
    "fair_share",
    "kill_gang_node",
    "kill_redis",
    "kill_worker",
    "postgres_outage",
    "reference",
    "term_worker",
]
