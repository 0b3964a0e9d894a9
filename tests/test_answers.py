import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import InvalidInput
from orchestrator.events import Question, QuestionItem, QuestionOption, ToolRef
from orchestrator.questions import check_answers


def question(*items: QuestionItem) -> Question:
    return Question(id="que_1", sessionID="s1", questions=list(items), tool=ToolRef("m", "c"))


def item(*labels: str, multiple: bool = False, custom: bool = False) -> QuestionItem:
    options = [QuestionOption(label, f"about {label}") for label in labels]
    return QuestionItem("Which?", "Pick", options, multiple=multiple, custom=custom)


def test_one_label_from_the_options_is_accepted() -> None:
    check_answers(question(item("A", "B")), [["A"]])


def test_several_labels_only_where_multiple() -> None:
    check_answers(question(item("A", "B", multiple=True)), [["A", "B"]])
    with pytest.raises(InvalidInput, match="single answer") as refused:
        check_answers(question(item("A", "B")), [["A", "B"]])
    assert refused.value.details["path"] == "$.answers[0]"


def test_labels_outside_the_options_only_where_custom() -> None:
    check_answers(question(item("A", custom=True)), [["something else"]])
    with pytest.raises(InvalidInput, match="not one of the options") as refused:
        check_answers(question(item("A")), [["something else"]])
    assert refused.value.code == "INVALID_ANSWER"


def test_one_inner_array_per_question() -> None:
    with pytest.raises(InvalidInput, match="expected 2 answer arrays"):
        check_answers(question(item("A"), item("B")), [["A"]])


def test_empty_and_repeated_answers_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        check_answers(question(item("A")), [[]])
    with pytest.raises(InvalidInput, match="repeat"):
        check_answers(question(item("A", "B", multiple=True)), [["A", "A"]])


@given(
    labels=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True),
    multiple=st.booleans(),
    custom=st.booleans(),
    chosen=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
)
def test_accepted_exactly_when_the_rules_allow(
    labels: list[str], multiple: bool, custom: bool, chosen: list[str]
) -> None:
    allowed = (
        (len(chosen) == 1 or multiple)
        and len(set(chosen)) == len(chosen)
        and (custom or set(chosen) <= set(labels))
    )
    q = question(item(*labels, multiple=multiple, custom=custom))
    if allowed:
        check_answers(q, [chosen])
    else:
        with pytest.raises(InvalidInput):
            check_answers(q, [chosen])
