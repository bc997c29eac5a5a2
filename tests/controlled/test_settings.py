"""Controlled-track settings (aglora.controlled.settings) refuse bad values."""

from __future__ import annotations

import pytest

from aglora.controlled.settings import ControlledConfig, ImplantConfig, MethodSettings
from aglora.errors import AgloraError


@pytest.mark.parametrize("kwargs", [{"methods": ["nope"]}, {"methods": []},
                                    {"fq_wording": "x"}, {"utility_films": 0},
                                    {"utility_films": 19}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(AgloraError):
        ControlledConfig(**kwargs)


def test_settings_reject_bad_values():
    with pytest.raises(AgloraError):
        ImplantConfig(epochs=0)
    with pytest.raises(AgloraError):
        MethodSettings(steps=0)
