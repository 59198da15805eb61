"""Automation: sensors, schedules and the jobs they launch."""

__all__ = ["jobs", "landing_sensors", "schedules", "sensors"]
