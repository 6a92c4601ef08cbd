"""A pytest plugin for the figures in docs/TRUST.md ("Measured"): every HTTP answer the apps gave, by test file,
and which race and fault tests ran and passed. Not loaded by `make test`; run it without xdist:

    .venv/bin/python -m pytest -p tests.trust_tally -p no:cacheprovider tests/test_fuzz_api.py \
        tests/test_hostile_text.py tests/test_hostile_input.py tests/test_authz_matrix.py \
        tests/test_concurrency.py tests/test_db_faults.py tests/test_download_faults.py tests/test_faults.py

(`python -m` puts the project on sys.path, which `-p tests.…` needs.)
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

HOSTILE = ("test_fuzz_api.py", "test_hostile_text.py", "test_hostile_input.py", "test_authz_matrix.py")
RACES = ("test_concurrency.py",)
FAULTS = ("test_db_faults.py", "test_download_faults.py", "test_faults.py")

_current = {"file": "-"}
_answers: dict[str, Counter[int]] = defaultdict(Counter)
_outcomes: dict[str, Counter[str]] = defaultdict(Counter)


def _answered(_app: Any, response: Any, **_: Any) -> None:
    _answers[_current["file"]][response.status_code] += 1


def pytest_configure(config: pytest.Config) -> None:
    from flask import request_finished

    request_finished.connect(_answered, weak=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current["file"] = item.path.name


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.nodeid.split("::")[0].rsplit("/", 1)[-1]][report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write = terminalreporter.write_line
    write("")
    write("trust tally: file | requests | 5xx | tests passed / failed / skipped")
    for name in sorted(set(_answers) | set(_outcomes)):
        answers, outcomes = _answers[name], _outcomes[name]
        fives = sum(n for status, n in answers.items() if status >= 500)
        write(f"  {name} | {sum(answers.values())} | {fives} | {outcomes['passed']} / {outcomes['failed']} / "
              f"{outcomes['skipped']}")
    hostile = [n for n in _answers if n in HOSTILE]
    write(f"hostile requests: {sum(sum(_answers[n].values()) for n in hostile)}, 5xx: "
          f"{sum(k for n in hostile for s, k in _answers[n].items() if s >= 500)}")
    for group, files in (("race tests", RACES), ("fault tests", FAULTS)):
        passed = sum(_outcomes[n]["passed"] for n in files)
        failed = sum(_outcomes[n]["failed"] for n in files)
        write(f"{group}: {passed} passed, {failed} failed")
