"""Suites: the simplest form, the content hash, the checks that name the place of a mistake, the shipped suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from singularity_ops.controllers.validator.suite import SuiteError, load_suite, parse_suite

SIMPLEST = """
name: smoke
cases:
  - {id: capital, prompt: "What is the capital of France?", expect: {contains: Paris}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_the_simplest_suite_reads_as_the_issue_writes_it(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, SIMPLEST))
    (case,) = suite.cases
    assert (suite.name, case.id, case.weight, case.tags) == ("smoke", "capital", 1.0, ())
    assert case.messages == ({"role": "user", "content": "What is the capital of France?"},)
    assert case.expect[0].kind == "contains" and suite.needs == set()


def test_the_hash_follows_the_content_not_the_formatting(tmp_path: Path) -> None:
    same = load_suite(write(tmp_path, "# a comment\n" + yaml.safe_dump(yaml.safe_load(SIMPLEST), indent=4)))
    changed = load_suite(write(tmp_path, SIMPLEST.replace("Paris", "paris")))
    assert same.hash == load_suite(write(tmp_path, SIMPLEST)).hash
    assert changed.hash != same.hash and len(same.hash) == 64


def test_system_messages_options_weights_and_defaults() -> None:
    suite = parse_suite({"name": "s", "options": {"temperature": 0, "num_predict": 50}, "cases": [
        {"id": "a", "system": "Be terse.", "prompt": "hi", "options": {"num_predict": 10}, "weight": 2,
         "tags": ["x"], "expect": {"equals": "hi", "judge": "Greets back."}},
        {"id": "b", "messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                                 {"role": "user", "content": "three"}], "expect": {"similar": "four"}},
    ]}, "test")
    a, b = suite.cases
    assert a.messages == ({"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"})
    assert (a.options, a.weight, a.tags) == ({"temperature": 0, "num_predict": 10}, 2.0, ("x",))
    assert b.question == "one\n\nthree" and suite.needs == {"judge", "similar"}


@pytest.mark.parametrize(("document", "message"), [
    ([], "a suite is a mapping"),
    ({"cases": []}, "needs a 'name'"),
    ({"name": "s", "cases": []}, "non-empty 'cases'"),
    ({"name": "s", "tests": [], "cases": [1]}, "unknown key 'tests'"),
    ({"name": "s", "cases": [{"prompt": "hi", "expect": {"equals": "a"}}]}, "cases[0] needs an 'id'"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "hi"}]}, "case 'a' needs 'expect'"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "hi", "messages": [], "expect": {"equals": "a"}}]},
     "either 'prompt' or 'messages'"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "hi", "expect": {"equals": "a"}, "weigth": 2}]},
     "unknown key 'weigth'"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "hi", "weight": 0, "expect": {"equals": "a"}}]},
     "weight must be a number above 0"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "x", "expect": {"equals": "a"}},
                             {"id": "a", "prompt": "y", "expect": {"equals": "b"}}]}, "case id 'a' is used twice"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "x", "expect": {"regex": "("}}]}, "bad regular expression"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "x", "expect": {"json": {"schema": {"format": "email"}}}}]},
     "JSON Schema keyword 'format' is not supported"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "x", "expect": {"number": "ten"}}]}, "must be a number"),
    ({"name": "s", "cases": [{"id": "a", "prompt": "x", "expect": {"judge": {"rubric": "r", "min_score": 11}}}]},
     "0 to 10"),
    ({"name": "s", "cases": [{"id": "a", "messages": [{"role": "user", "content": "x"},
                                                      {"role": "assistant", "content": "y"}],
                              "expect": {"equals": "a"}}]}, "must end with a user message"),
])
def test_a_mistake_is_one_error_naming_where_it_is(document: object, message: str) -> None:
    with pytest.raises(SuiteError, match=r"^suite test: ") as raised:
        parse_suite(document, "test")
    assert message in str(raised.value)


def test_an_unreadable_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot read suite"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(SuiteError, match=r"suite.yaml line 3 is not valid YAML"):
        load_suite(write(tmp_path, "name: s\ncases: [\n"))


def test_the_shipped_suite_covers_the_four_kinds_with_local_scorers_only() -> None:
    suite = load_suite()
    assert suite.source == "default" and 20 <= len(suite.cases) <= 40
    assert suite.needs == set(), "a 2 GB box has no judge or embedding model to spare"
    tags = {tag for case in suite.cases for tag in case.tags}
    assert {"coding", "reasoning", "extraction", "instructions"} <= tags
    capital = suite.cases[0]
    assert (capital.id, capital.messages[-1]["content"]) == ("capital", "What is the capital of France?")
    assert all(case.options.get("num_predict", 0) <= 300 for case in suite.cases)
