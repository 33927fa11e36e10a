"""The one registry idiom: register, build with checked keywords, names, "did you mean"."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal

import pytest

from densemtl.registry import ConfigTypeError, Registry, UnknownNameError, conforms


def make() -> Registry:
    reg = Registry("widget", "widget")

    @reg.register("box")
    def box(size: int, scale: float = 1.0, mode: Literal["a", "b"] = "a",
            dims: Sequence[int] | None = None, extra: Mapping[str, float] | None = None) -> tuple:
        return size, scale, mode, dims, extra

    class Base:
        def __init__(self, root: str, check: bool = True) -> None:
            self.root, self.check = root, check

    @reg.register("leaf")
    class Leaf(Base):
        def __init__(self, depth: int = 2, **kwargs) -> None:
            super().__init__(**kwargs)
            self.depth = depth

    reg.register("small_box")(partial(box, 3))
    return reg


def test_build_passes_keywords_and_lists_names_sorted():
    reg = make()
    assert reg.names() == ["box", "leaf", "small_box"] and "box" in reg and len(reg) == 3
    assert reg.build("box", 2, scale=3) == (2, 3, "a", None, None)
    assert reg.build("small_box", mode="b") == (3, 1.0, "b", None, None)
    leaf = reg.build("leaf", depth=4, root="/x")  # a base's keyword, through **kwargs
    assert (leaf.depth, leaf.root, leaf.check) == (4, "/x", True)


def test_unknown_names_and_keys_suggest_the_closest():
    reg = make()
    with pytest.raises(UnknownNameError, match=r"unknown widget 'bx'.*box, leaf, small_box.*"
                                               r"did you mean 'box'"):
        reg.get("bx")
    with pytest.raises(ValueError, match=r"widget: unknown option\(s\) \['scael'\].*"
                                         r"did you mean 'scale'"):
        reg.build("box", 1, scael=2.0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['size'\]"):  # fixed by partial
        reg.build("small_box", size=4)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['roots'\]"):
        reg.build("leaf", roots="/x")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("box")(lambda: None)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": "eight"}, r"widget\.size='eight': expected int, got str"),
    ({"size": True}, r"expected int, got bool"),
    ({"size": 1, "scale": "x"}, r"widget\.scale='x': expected float"),
    ({"size": 1, "mode": "c"}, r"widget\.mode='c': expected Literal\['a', 'b'\]"),
    ({"size": 1, "dims": [1, "2"]}, r"widget\.dims=\[1, '2'\]: expected Sequence\[int\] \| None"),
    ({"size": 1, "extra": [1.0]}, r"widget\.extra=\[1\.0\]: expected Mapping"),
])
def test_values_of_the_wrong_type_name_key_and_expected_type(kwargs, message):
    with pytest.raises(ConfigTypeError, match=message):
        make().build("box", **kwargs)


def test_conforms_accepts_what_a_config_may_hold():
    assert conforms(3, float) and not conforms(True, float) and conforms(None, int | None)
    assert conforms((1.0, 2), tuple[float, float]) and not conforms((1.0,), tuple[float, float])
    assert conforms([1, 2, 3], tuple[int, ...]) and not conforms("12", Sequence[str])
    assert conforms({"a": 1}, dict[str, int]) and conforms(object(), "unresolved")
