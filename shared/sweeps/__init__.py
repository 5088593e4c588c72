"""Hyperparameter sweeps on Optuna: every trial is an ordinary training job.

trial_specs  spec paths: check them on the base spec, apply a trial's parameters
study        the Optuna study of a sweep: storage, distributions, sampler, pruner
controller   one pass of a sweep's controller: settle ended trials, ask for new ones
"""
