"""Automation: sensors, schedules and the jobs they launch."""
