from __future__ import annotations

import pytest

from m2f_bench.errors import M2FError, UnknownNameError
from m2f_bench.registry import Registry, load_target


def test_decorator_registration_and_lookup():
    reg: Registry = Registry("widget")

    @reg.register("round-widget")
    class Round:
        pass

    assert reg.get("round-widget") is Round
    assert "round-widget" in reg
    assert reg.names() == ["round-widget"]


def test_duplicate_name_is_an_error():
    reg: Registry = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_unknown_name_lists_close_matches():
    reg: Registry = Registry("inpainter")
    reg.register("opencv-telea", 1)
    reg.register("opencv-ns", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("opencv-tela")
    message = str(info.value)
    assert "unknown inpainter 'opencv-tela'" in message
    assert "did you mean opencv-telea" in message


def test_lazy_entry_is_imported_on_first_get():
    reg: Registry = Registry("thing")
    reg.register_lazy("join", "os.path:join")
    import os.path

    assert reg.get("join") is os.path.join


def test_load_target_errors_are_one_line():
    with pytest.raises(M2FError, match="must look like"):
        load_target("no_colon_here")
    with pytest.raises(M2FError, match="cannot import"):
        load_target("surely_not_a_module_xyz:Thing")
    with pytest.raises(M2FError, match="has no attribute"):
        load_target("os:not_there_xyz")
