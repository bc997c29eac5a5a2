"""Bans (aglora.recommend.ban): a ban saved before a setting existed reopens."""

from __future__ import annotations


def test_a_ban_saved_before_a_recommend_setting_existed_reopens():
    import dataclasses

    from aglora.recommend.ban import same_ban
    from aglora.recommend.settings import RecConfig

    now = {"items": ["Star Wars"], "recommend": dataclasses.asdict(RecConfig())}
    old = {"items": ["Star Wars"], "recommend": {k: v for k, v in now["recommend"].items()
                                                 if k != "forget_distractor_quantile"}}
    assert same_ban(old, now) and same_ban(now, now)
    # ...but not when the new setting is asked for at another value, or the items differ
    moved = {**now, "recommend": {**now["recommend"], "forget_distractor_quantile": 0.7}}
    assert not same_ban(old, moved)
    assert not same_ban({**old, "items": ["Alien"]}, now)
