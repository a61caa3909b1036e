"""Every preset runs, at the settings the dashboard uses, to the outcome it states in
``app/presets.json`` (``expect``).  The funnel, a lesson in failure that takes minutes to fail at
full size, is run at small settings in ``test_app_model.test_funnel_preset_runs_to_its_stated_outcome``."""
from __future__ import annotations

import pytest

import mne_core as mc
from app.settings import PRESETS, Settings

#: What each ``expect`` of a preset allows as the run's final status.
OUTCOMES = {
    "ok": {mc.Status.OK},
    "warning": {mc.Status.WARNING},
    "failed": {mc.Status.FAILED},
    "ok or warning": {mc.Status.OK, mc.Status.WARNING},
    "warning or failed": {mc.Status.WARNING, mc.Status.FAILED},
    "not ok": {mc.Status.WARNING, mc.Status.FAILED},
}
FULL_SIZE = [name for name in PRESETS["presets"] if name != "funnel"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE)
def test_preset_runs_to_its_stated_outcome(name):
    preset = PRESETS["presets"][name]
    evo = mc.Evolution(Settings(preset=name).to_config())
    evo.prepare()
    for _ in evo.steps():
        pass
    assert evo.status in OUTCOMES[preset["expect"]], (name, preset["expect"], evo.status, evo.message)
    if evo.status != mc.Status.OK:  # the page shows the reason; the preset's text prepares for it
        assert evo.message
