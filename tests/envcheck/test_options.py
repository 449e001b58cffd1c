"""Options: validated at construction, one line naming the valid range."""

import math

import pytest

from detbench.envcheck.options import MAX_TIMEOUT_S, Options


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e10, 0.0, -1.0])
def test_a_timeout_thread_join_cannot_take_is_refused(bad):
    with pytest.raises(ValueError, match=r"--timeout must be a number of seconds in \(0, 86400\]"):
        Options(timeout_s=bad)


def test_the_longest_timeout_is_accepted():
    assert Options(timeout_s=MAX_TIMEOUT_S).timeout_s == MAX_TIMEOUT_S
