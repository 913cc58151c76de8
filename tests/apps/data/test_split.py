import pytest

from monai_crossd.apps.data import split_datalist


def test_parts_are_disjoint_complete_sized_and_keep_order():
    items = [{"case": i} for i in range(208)]
    train, val, test = split_datalist(items, (0.6, 0.2, 0.2), seed=0)
    assert (len(train), len(val), len(test)) == (125, 42, 41)
    cases = [[d["case"] for d in part] for part in (train, val, test)]
    assert sorted(sum(cases, [])) == list(range(208))
    assert all(part == sorted(part) for part in cases)


def test_deterministic_per_seed_and_seed_matters():
    items = list(range(50))
    assert split_datalist(items, seed=3) == split_datalist(items, seed=3)
    assert split_datalist(items, seed=3) != split_datalist(items, seed=4)


def test_stratified_by_label_key():
    items = [{"label": i % 2, "case": i} for i in range(16)]
    train, val = split_datalist(items, (0.75, 0.25), seed=0, label_key="label")
    assert len(train) == 12 and sorted(d["label"] for d in val) == [0, 0, 1, 1]
    unstratified = [sorted(d["label"] for d in split_datalist(items, (0.75, 0.25), seed=s)[1]) for s in range(20)]
    assert any(labels != [0, 0, 1, 1] for labels in unstratified)  # stratification is what keeps the classes even


@pytest.mark.parametrize(
    "args, match",
    [
        (([1, 2, 3], (0.8, 0.0)), r"`ratios` should be positive"),
        (([], (0.8, 0.2)), "`datalist` is empty"),
        (([1], (0.5, 0.5)), r"leaves an empty part \[1, 0\]"),
    ],
)
def test_errors(args, match):
    with pytest.raises(ValueError, match=match):
        split_datalist(*args)


def test_missing_label_key_names_item():
    with pytest.raises(ValueError, match="item 1 has no 'label' key"):
        split_datalist([{"label": 0}, {"x": 1}], label_key="label")
