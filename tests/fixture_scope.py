"""The scope of fixtures that build a dataset once for several tests."""

import os


def module_unless_mutmut(fixture_name: str, config) -> str:
    """'module', except under mutmut (bench/mutation.sh; it sets MUTANT_UNDER_TEST): 'function' there.

    mutmut runs, for each mutant, the tests that called the mutated function. The calls a module fixture
    makes are credited to the first test that used it alone, so the tests that check what it built would
    never run against those mutants."""
    return "function" if "MUTANT_UNDER_TEST" in os.environ else "module"
