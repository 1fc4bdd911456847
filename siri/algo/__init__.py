"""Algorithm pieces that are not kernels: length schedules (``siri.algo.schedule``)."""
from siri.algo.schedule import KINDS, LengthSchedule, make_schedule, schedule_from_dict

__all__ = ["KINDS", "LengthSchedule", "make_schedule", "schedule_from_dict"]
