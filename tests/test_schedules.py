"""beta schedules against values computed by hand."""

import pytest

from vaekit.schedules import Capacity, Constant, Cyclical, LinearWarmup


@pytest.mark.parametrize(
    "schedule, steps, expected",
    [
        (Constant(4.0), [0, 10, 10**6], [4.0, 4.0, 4.0]),
        (LinearWarmup(1.0, steps=100), [0, 25, 100, 500], [0.0, 0.25, 1.0, 1.0]),
        (LinearWarmup(2.0, steps=0), [0, 7], [2.0, 2.0]),
        # Fu et al. 2019: period 10, the first half rises linearly, the second half stays at 1
        (Cyclical(1.0, period=10, ratio=0.5), [0, 2, 5, 9, 10, 12], [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]),
        (Cyclical(1.0, period=4, ratio=1.0), [0, 1, 3, 4], [0.0, 0.25, 0.75, 0.0]),
        # Burgess et al. 2018: C rises linearly to 25 nats over 100,000 steps, then stays
        (Capacity(25.0, steps=100_000), [0, 20_000, 50_000, 100_000, 10**6], [0, 5, 12.5, 25, 25]),
        (Capacity(3.0, steps=0), [0, 9], [3.0, 3.0]),
    ],
    ids=["constant", "warmup", "no-warmup", "cyclical", "saw-tooth", "capacity", "capacity-0"],
)
def test_schedule_values(schedule, steps, expected):
    assert [schedule(s) for s in steps] == pytest.approx(expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearWarmup(1.0, steps=-1),
        lambda: Cyclical(period=0),
        lambda: Cyclical(ratio=0.0),
        lambda: Capacity(c_max=-1.0),
        lambda: Capacity(steps=-5),
        lambda: Capacity(steps=1.5),
        lambda: Capacity()(-1),
    ],
)
def test_schedules_reject_nonsense(make):
    with pytest.raises(ValueError):
        make()
