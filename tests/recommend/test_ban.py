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


def test_ban_mask_is_k_per_title_unless_mask_k_is_given():
    from aglora.recommend.ban import ban_mask_k
    from aglora.recommend.settings import RecConfig
    assert ban_mask_k(64, 1, RecConfig(), []) == 64
    assert ban_mask_k(64, 3, RecConfig(), ["train.lr=0.01"]) == 192
    assert ban_mask_k(100, 3, RecConfig(), ["mask.k=100"]) == 100        # the caller's, in all
    assert ban_mask_k(64, 3, RecConfig(mask_per_title=False), []) == 64
