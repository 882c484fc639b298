"""Under `protrade serve`, a run's `env` job variable becomes its environment, as under a process
worker; the other job variables are named as ignored (the end-to-end check is in test_serve.py)."""

from __future__ import annotations

from flows.serve import job_environment


def test_the_env_job_variable_becomes_the_runs_environment_as_strings():
    env, ignored = job_environment({"env": {"PROTRADE_UNDERLYINGS": "NIFTY", "N": 3}})
    assert env == {"PROTRADE_UNDERLYINGS": "NIFTY", "N": "3"}
    assert ignored == []


def test_a_run_without_job_variables_changes_nothing():
    assert job_environment(None) == ({}, [])
    assert job_environment({}) == ({}, [])


def test_job_variables_only_workers_understand_are_named_as_ignored():
    env, ignored = job_environment({"working_dir": "/x", "command": "y", "env": {"A": "1"}})
    assert env == {"A": "1"}
    assert ignored == ["command", "working_dir"]


def test_an_env_that_is_not_a_mapping_is_ignored_not_half_applied():
    assert job_environment({"env": "PROTRADE_UNDERLYINGS=NIFTY"}) == ({}, ["env"])


def test_a_null_value_leaves_the_variable_as_serve_has_it():
    assert job_environment({"env": {"A": None, "B": "2"}}) == ({"B": "2"}, [])
