"""The `trainyard` commands, one module per API resource (and one for running the service).

service      db upgrade, serve, worker, sweep, token create
jobs         submit, watch, jobs, show, cancel   /api/v1/jobs
results      metrics, traces, plot               /api/v1/jobs/<id>/{metrics,traces,plots}
checkpoints  download                            /api/v1/jobs/<id>/checkpoints
models       predict                             /api/v1/models/<id>/predict
"""
