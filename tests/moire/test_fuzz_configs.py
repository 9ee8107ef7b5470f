"""Property-based fuzz of `moire` configs (issue 15): ≥ 1,000 mutations of the shipped configs, each
through the CLI's own error path; none may end in a traceback or an exit code other than 0 or 2, and
every error is one line."""

from hypothesis import HealthCheck, given, settings

from tests.moire.fuzz_configs import hostile_input, prepare

SEEN = {0: 0, 2: 0}


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_input())
def test_hostile_configs_end_in_exit_0_or_one_line_exit_2(case):
    command, config, sets = case
    code, message = prepare(command, config, sets)
    assert code in (0, 2), (case, message)
    SEEN[code] += 1
    if code == 2:
        assert message.startswith("moire: error: ") and message.count("\n") == 1, (case, message)
    else:
        assert "Traceback" not in message and all(ln.startswith("moire: warning") for ln in message.splitlines()), (
            case, message)


def test_fuzz_saw_both_outcomes():
    """Run after the fuzz above (same module, file order): the generator reaches valid configs too."""
    assert SEEN[0] > 100 and SEEN[2] > 300, SEEN
