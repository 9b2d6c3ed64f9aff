from rasft_trl import filters


def test_near_duplicates_by_word_trigram_jaccard():
    a = "we add the two numbers to get five so the answer is five"
    b = "we add the two numbers to get five so the answer is five ."  # one extra token: J = 10/11 = 0.909
    c = "multiply three by four and subtract two to reach ten"
    assert filters.jaccard(filters.word_ngrams(a), filters.word_ngrams(b)) >= 0.82
    assert filters.near_duplicates([a, b, c]) == [False, True, False]
    assert filters.near_duplicates([a, b, c], threshold=0.95) == [False, False, False]


def test_loop_detection():
    loop = "and then we add one " * 20
    assert filters.is_looping(loop)
    assert not filters.is_looping("First add 3 and 4 to get 7, then double it to get 14. " * 2)
    assert not filters.is_looping("short text", min_ngrams=20)


def test_shortcut_detection():
    assert filters.is_shortcut("\\boxed{5}")
    assert filters.is_shortcut("Answer: \\boxed{5}", min_reasoning_chars=20)
    assert not filters.is_shortcut("First, 2 + 3 = 5 because we add them together. \\boxed{5}")
    assert not filters.is_shortcut("no box at all")


def test_filter_rollouts_reasons_and_switches():
    texts = ["\\boxed{5}", "x " * 3, "Two plus three is five, since we count on. \\boxed{5}",
             "Two plus three is five, since we count on. \\boxed{5}", "go on " * 30]
    lengths = [3, 1, 12, 12, 60]
    assert filters.filter_rollouts(texts, lengths) == [None] * 5  # everything off by default
    reasons = filters.filter_rollouts(texts, lengths, near_duplicate_threshold=0.82, loop_repeat_fraction=0.5,
                                      min_tokens=2, shortcut_min_chars=20)
    assert reasons == ["shortcut", "too_short", None, "near_duplicate", "loop"]
