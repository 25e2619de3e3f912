"""Final answers: the last balanced \\boxed{...}, and the normalisation that makes answers comparable."""

from __future__ import annotations

import pytest

from fw_rollouts import InvalidTypeError, ValidationError, extract_answer, extract_boxed, normalize_answer


def test_the_last_closed_box_with_nested_braces() -> None:
    text = r"First \boxed{3}, no wait: \boxed{\frac{1}{2}}. Done."
    assert extract_boxed(text) == r"\frac{1}{2}"
    assert extract_boxed(text, which="first") == "3"


def test_an_unclosed_last_box_is_skipped_for_the_one_before() -> None:
    # The sample was cut off inside its last box: the answer is the previous closed box.
    assert extract_boxed(r"\boxed{7} then maybe \boxed{\frac{1}{") == "7"
    assert extract_boxed(r"it is \boxed{8") is None


def test_empty_boxes_and_missing_boxes() -> None:
    assert extract_boxed(r"Put the answer in \boxed{}. So \boxed{12}. And \boxed{ }") == "12"
    assert extract_boxed("no box here") is None
    assert extract_boxed("") is None
    # \boxed without braces is not read (nor is it by the published code).
    assert extract_boxed(r"\boxed 5") is None


def test_escaped_braces_and_a_box_inside_a_box() -> None:
    assert extract_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    # Each occurrence is read on its own: the inner box starts last.
    assert extract_boxed(r"\boxed{\boxed{5}}") == "5"
    assert extract_boxed(r"\boxed{\boxed{5}}", which="first") == r"\boxed{5}"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"\dfrac{1}{2}", r"\frac12"),
        (r"\tfrac{1}{2}", r"$\frac{1}{2}$"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{Yes}", "yes"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90°"),
        (r"50\%", "50"),
        ("1,000", "1000"),
        (r"1{,}000", "1000"),
        (r"88\,572", "88572"),
        ("5.", "5"),
        ("{12}.", "12"),
        (r"3 \times 4", r"3\cdot4"),
        (r"\pi", "pi"),
        (r"\dfrac{3}{4}\ \text{cm}", r"\frac34cm"),
        (r"\mathrm{cm}^2", "cm^2"),
        (r"x^{2}", "x^2"),
        (r"\displaystyle \frac{\pi}{2}", r"\frac{\pi}2"),
    ],
)
def test_equal_keys_for_the_same_answer(a: str, b: str) -> None:
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # The published brace removal makes both "\frac123"; 1/23 is not 12/3.
        (r"\frac{1}{23}", r"\frac{12}{3}"),
        # The published decimal rule reads the pair (1,2) as (1.2).
        ("(1,2)", "(1.2)"),
        ("10^{10}", "10^10"),
        (r"\{1,2\}", "(1,2)"),
        (r"x \rightarrow 1", "x1"),
    ],
)
def test_different_answers_keep_different_keys(a: str, b: str) -> None:
    assert normalize_answer(a) != normalize_answer(b)


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        (r"\dfrac{1}{2}", r"\frac12"),
        (r"\frac{1}{23}", r"\frac1{23}"),
        (r"\left[ 0, \infty \right)", r"[0,\infty)"),
        (r"\text{October}\ 30", "october30"),
        (" 42 ", "42"),
        ("3.14", "3.14"),
    ],
)
def test_keys(answer: str, key: str) -> None:
    assert normalize_answer(answer) == key


@pytest.mark.parametrize(
    "answer",
    [r"{12}.", r"{{5}}", r"\frac{\pi}{2}", r"{\pi}r^2", r"\text{ {a} }.", "1,000.", r"\left\{ 1 \right\}", "$5$."],
)
def test_a_key_normalises_to_itself(answer: str) -> None:
    key = normalize_answer(answer)
    assert normalize_answer(key) == key


def test_extract_answer_normalises_by_default() -> None:
    text = r"So the answer is $\boxed{\dfrac{1}{2}}$."
    assert extract_answer(text) == r"\frac12"
    assert extract_answer(text, normalize=False) == r"\dfrac{1}{2}"
    assert extract_answer(r"\boxed{1} then \boxed{2}", which="first") == "1"
    assert extract_answer("no answer") is None
    # A box that normalises to nothing is no answer.
    assert extract_answer(r"\boxed{\,}") is None


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValidationError) as info:
        extract_boxed("x", which="middle")  # type: ignore[arg-type]
    assert info.value.argument == "which"
    with pytest.raises(InvalidTypeError) as info:
        extract_answer(None)  # type: ignore[arg-type]
    assert info.value.argument == "text"
    with pytest.raises(InvalidTypeError) as info:
        normalize_answer(5)  # type: ignore[arg-type]
    assert info.value.argument == "answer"
