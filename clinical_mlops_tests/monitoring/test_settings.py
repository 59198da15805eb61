"""Monitoring defaults are defined once: the assets' run configs and the domain functions share them."""

from __future__ import annotations

import inspect

from clinical_mlops.governance.policy import MonitoringPolicy
from clinical_mlops.monitoring import estimation, production, settings, steps


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_values_are_unchanged():
    assert (settings.PRODUCTION_WINDOW_DAYS, settings.PERFORMANCE_PERIOD, settings.MIN_LABELLED,
            settings.AUROC_TOLERANCE, settings.PERFORMANCE_N_BOOTSTRAP) == (90.0, "week", 200, 0.05, 200)
    assert (settings.SKEW_WINDOW_DAYS, settings.MIN_SERVED, settings.MAX_MISMATCH_RATE) == (30.0, 100, 0.01)
    assert (settings.ESTIMATION_N_SIMULATIONS, settings.ESTIMATION_SEED) == (400, 20261115)
    assert (settings.LABEL_DELAY_DAYS, settings.MAX_CALIBRATION_ERROR) == (30.0, 0.05)


def test_the_policy_defaults_are_the_policys_own():
    section = MonitoringPolicy()
    assert settings.LABEL_DELAY_DAYS == section.label_delay_days == production.DEFAULT_LABEL_DELAY_DAYS
    assert settings.MAX_CALIBRATION_ERROR == section.max_calibration_error == estimation.MAX_CALIBRATION_ERROR
    assert steps.label_delay(None, None) == settings.LABEL_DELAY_DAYS
    assert steps.label_delay(None, 7) == 7.0


def test_the_asset_configs_default_to_the_settings():
    from clinical_mlops.defs.monitoring.assets import ProductionMonitoringConfig, SkewConfig

    assert ProductionMonitoringConfig().model_dump() == {
        "window_days": settings.PRODUCTION_WINDOW_DAYS, "period": settings.PERFORMANCE_PERIOD,
        "min_labelled": settings.MIN_LABELLED, "auroc_tolerance": settings.AUROC_TOLERANCE,
        "n_bootstrap": settings.PERFORMANCE_N_BOOTSTRAP,
    }
    assert SkewConfig().model_dump() == {"window_days": settings.SKEW_WINDOW_DAYS, "min_served": settings.MIN_SERVED,
                                         "max_mismatch_rate": settings.MAX_MISMATCH_RATE}


def test_the_domain_functions_default_to_the_same_settings():
    performance = _defaults(production.performance_over_time)
    assert {k: performance[k] for k in ("period", "window_days", "min_labelled", "auroc_tolerance", "n_boot")} == {
        "period": settings.PERFORMANCE_PERIOD, "window_days": settings.PRODUCTION_WINDOW_DAYS,
        "min_labelled": settings.MIN_LABELLED, "auroc_tolerance": settings.AUROC_TOLERANCE,
        "n_boot": settings.PERFORMANCE_N_BOOTSTRAP,
    }
    assert _defaults(production.production_fairness)["window_days"] == settings.PRODUCTION_WINDOW_DAYS
    skew = _defaults(production.training_serving_skew)
    assert (skew["window_days"], skew["min_served"], skew["max_mismatch_rate"]) == (
        settings.SKEW_WINDOW_DAYS, settings.MIN_SERVED, settings.MAX_MISMATCH_RATE)
    for function in (estimation.monitor_windows, steps.estimate_windows):
        found = _defaults(function)
        assert (found["n_simulations"], found["seed"]) == (settings.ESTIMATION_N_SIMULATIONS, settings.ESTIMATION_SEED)
    assert _defaults(estimation.estimate_window)["n_simulations"] == settings.ESTIMATION_N_SIMULATIONS
    windows = _defaults(estimation.monitor_windows)
    assert (windows["label_delay_days"], windows["max_calibration_error"]) == (
        settings.LABEL_DELAY_DAYS, settings.MAX_CALIBRATION_ERROR)
    assert _defaults(estimation.calibration_gate)["bound"] == settings.MAX_CALIBRATION_ERROR
