"""Every entry point takes pandas DataFrames/Series and lists as it takes NumPy arrays.

fnn.batches, model(x), fit (with validation_data and sample_weight), evaluate, predict,
predict_proba and the losses called directly give exactly the results of the same data
as a NumPy array; bool, nullable (Int64, Float64, boolean) and numeric categorical
columns convert like their values; bad data is named by row (index label) and column
(name) with its real dtype.  The list tests need no pandas.
"""
import numpy as np
import pytest

import fastnn as fnn

N, K, CLASSES = 40, 5, 3


@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, K))
    y = rng.integers(0, CLASSES, N)
    return x, y


def _model(loss="cross_entropy", outputs=CLASSES, seed=0):
    model = fnn.Sequential(fnn.Linear(K, 6), fnn.Tanh(), fnn.Linear(6, outputs), seed=seed)
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss=loss, metrics=["accuracy"])
    return model


def _fit(x, y, loss="cross_entropy", outputs=CLASSES, **kwargs):
    model = _model(loss, outputs)
    history = model.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0, **kwargs)
    return model, history


def _same_training(a, b):
    """Two (model, history) pairs trained identically: same losses, same weights."""
    (ma, ha), (mb, hb) = a, b
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ha.history.get(key) == hb.history.get(key), key
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def _mixed_frame(pd, seed=0):
    """A DataFrame of every kind of numeric column, with a string index, and the NumPy
    array of the same values."""
    rng = np.random.default_rng(seed)
    f64 = rng.normal(size=N)
    flag = rng.random(N) > 0.5
    nullable = rng.normal(size=N)
    count = rng.integers(0, 9, N)
    yes = rng.random(N) > 0.3
    frame = pd.DataFrame({
        "f64": f64,                                          # float64
        "flag": flag,                                        # bool
        "nullable": pd.array(nullable, dtype="Float64"),     # nullable float
        "count": pd.array(count, dtype="Int64"),             # nullable int
        "yes": pd.array(yes, dtype="boolean"),               # nullable bool
    }, index=[f"r{i}" for i in range(N)])
    array = np.column_stack([f64, flag, nullable, count, yes]).astype(np.float64)
    return frame, array


# ------------------------------------------------------------------------------ lists
def test_lists_equal_arrays_everywhere():
    x, y = _arrays()
    xl, yl = x.tolist(), y.tolist()
    _same_training(_fit(xl, yl, validation_data=(xl, yl), sample_weight=[1.0] * N),
                   _fit(x, y, validation_data=(x, y), sample_weight=np.ones(N)))
    model = _fit(x, y)[0]
    np.testing.assert_array_equal(model(xl), model(x))
    np.testing.assert_array_equal(model.predict(xl), model.predict(x))
    np.testing.assert_array_equal(model.predict_proba(xl), model.predict_proba(x))
    assert model.evaluate(xl, yl) == model.evaluate(x, y)
    logits = model(x).astype(np.float64)       # a list of Python floats is float64
    loss_fn = fnn.CrossEntropyLoss()
    expected = loss_fn(logits, y, sample_weight=np.arange(N) / N)
    got = loss_fn(logits.tolist(), yl, sample_weight=(np.arange(N) / N).tolist())
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_batches_of_lists_shuffle_like_arrays():
    x, y = _arrays()
    got = list(fnn.batches(x.tolist(), y.tolist(), batch_size=7, shuffle=True, seed=1))
    want = list(fnn.batches(x, y, batch_size=7, shuffle=True, seed=1))
    assert len(got) == len(want) == 6
    for (xb, yb), (xw, yw) in zip(got, want):
        assert isinstance(xb, np.ndarray) and xb.flags.c_contiguous and xb.flags.writeable
        np.testing.assert_array_equal(xb, xw)
        np.testing.assert_array_equal(yb, yw)


def test_object_arrays_and_mixed_lists_of_numbers_convert():
    x, _ = _arrays()
    model = _model()
    mixed = [[int(round(v)) if j == 0 else float(v) for j, v in enumerate(row)] for row in x]
    mixed[0][1] = True
    expected = np.array(mixed, dtype=np.float64)
    np.testing.assert_array_equal(model(mixed), model(expected))
    np.testing.assert_array_equal(model(np.array(mixed, dtype=object)), model(expected))


def test_list_errors_name_the_position():
    model = _model()
    with pytest.raises(ValueError, match=r"rows of different lengths: row 0 has 5 values, "
                                         r"row 2 has 4"):
        model.predict([[0.0] * 5, [1.0] * 5, [2.0] * 4])
    with pytest.raises(ValueError, match=r"x has a missing value \(None\) at row 1, column 3"):
        model.predict([[0.0] * 5, [1.0, 2.0, 3.0, None, 4.0]])
    with pytest.raises(TypeError, match=r"x must hold real numbers .* got a str \('a'\) at "
                                        r"row 1, column 0"):
        model.predict([[0.0] * 5, ["a", 2.0, 3.0, 1.0, 4.0]])
    with pytest.raises(TypeError, match=r"targets must hold real numbers .* got a str "
                                        r"\('cat'\) at row 0; encode"):
        model.evaluate(np.zeros((2, K)), ["cat", "dog"])


def test_nan_in_arrays_is_named_by_row_and_column():
    x, y = _arrays()
    model = _model()
    bad = x.copy()
    bad[3, 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(2 value\(s\), the first "
                                         r"at row 3, column 2\)"):
        model.fit(bad, y, verbose=0)
    labels = y.astype(np.float64)
    labels[4] = np.nan
    with pytest.raises(ValueError, match=r"targets contains NaN or Inf \(1 value\(s\), the "
                                         r"first at row 4\)"):
        model.evaluate(x, labels)
    cube = np.ones((2, 3, K))
    cube[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"the first at index \(1, 2, 0\)"):
        model(cube)
    with pytest.raises(ValueError, match=r"sample_weight contains NaN or Inf .* row 5"):
        model.fit(x, y, sample_weight=[1.0] * 5 + [np.nan] + [1.0] * (N - 6), verbose=0)


# ------------------------------------------------------------------------------ pandas
def test_batches_take_dataframe_rows_by_position(pd):
    x, y = _arrays()
    index = np.random.default_rng(5).permutation(N) + 100      # not positions
    frame = pd.DataFrame(x, index=index, columns=list("abcde"))
    labels = pd.Series(y, index=index, name="label")
    got = list(fnn.batches(frame, labels, batch_size=8, shuffle=True, seed=2))
    want = list(fnn.batches(x, y, batch_size=8, shuffle=True, seed=2))
    assert len(got) == len(want) == 5
    for (xb, yb), (xw, yw) in zip(got, want):
        assert type(xb) is np.ndarray and xb.flags.c_contiguous and xb.flags.writeable
        np.testing.assert_array_equal(xb, xw)
        np.testing.assert_array_equal(yb, yw)
    unshuffled = np.concatenate(list(fnn.batches(frame, batch_size=16)))
    np.testing.assert_array_equal(unshuffled, x)


def test_the_readme_loop_on_a_dataframe(pd):
    x, y = _arrays()
    frame, series = pd.DataFrame(x), pd.Series(y)
    results = []
    for xs, ys in ((frame, series), (x, y)):
        model = _model()
        loss_fn, opt = fnn.CrossEntropyLoss(), fnn.SGD(model.parameters(), lr=0.1)
        for xb, yb in fnn.batches(xs, ys, batch_size=8, shuffle=True, seed=0):
            loss, grad = loss_fn(model(xb), yb)
            opt.zero_grad(); model.backward(grad); opt.step()
        results.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_bool_nullable_and_categorical_columns_equal_their_values(pd):
    frame, array = _mixed_frame(pd)
    frame["level"] = pd.Categorical(np.arange(N) % 3 + 1)        # numeric categories
    frame["mixed"] = pd.Series([1, 2.5] * (N // 2), dtype=object, index=frame.index)
    array = np.column_stack([array, np.arange(N) % 3 + 1, [1, 2.5] * (N // 2)])
    model = fnn.Sequential(fnn.Linear(7, 3), seed=0)
    np.testing.assert_array_equal(model(frame), model(array))
    np.testing.assert_array_equal(model(frame), model(array.astype(np.float32)))
    two = fnn.Sequential(fnn.Linear(2, 3), seed=0)    # the frame issue 12 tripped on:
    assert str(frame["flag"].dtype) == "bool"          # floats and one bool column
    np.testing.assert_array_equal(two(frame[["f64", "flag"]]), two(array[:, :2]))


def test_fit_evaluate_predict_on_pandas_equal_numpy(pd):
    frame, array = _mixed_frame(pd)
    _, y = _arrays()
    labels = pd.Series(y, index=frame.index, name="species")
    weights = pd.Series(np.linspace(0.5, 2.0, N), index=frame.index)
    _same_training(
        _fit(frame, labels, validation_data=(frame, labels), sample_weight=weights,
             class_weight={1: 2.0}),
        _fit(array, y, validation_data=(array, y), sample_weight=weights.to_numpy(),
             class_weight={1: 2.0}))
    model = _fit(array, y)[0]
    np.testing.assert_array_equal(model.predict(frame), model.predict(array))
    np.testing.assert_array_equal(model.predict_proba(frame), model.predict_proba(array))
    assert model.evaluate(frame, labels) == model.evaluate(array, y)
    _same_training(_fit(frame, labels, validation_split=0.25),
                   _fit(array, y, validation_split=0.25))


@pytest.mark.parametrize("dtype", ["int64", "Int64", "int8", "UInt8", "float64"])
def test_integer_label_series(pd, dtype):
    x, y = _arrays()
    labels = pd.Series(y, dtype=dtype)
    _same_training(_fit(pd.DataFrame(x), labels), _fit(x, y))
    model = _fit(x, y)[0]
    assert model.evaluate(x, labels) == model.evaluate(x, y)


@pytest.mark.parametrize("dtype", ["bool", "boolean"])
def test_bool_labels_for_binary_cross_entropy(pd, dtype):
    x, y = _arrays()
    positive = y == 1
    labels = pd.Series(positive, dtype=dtype)
    _same_training(_fit(pd.DataFrame(x), labels, loss="bce_with_logits", outputs=1),
                   _fit(x, positive.astype(np.float64), loss="bce_with_logits", outputs=1))
    model = _fit(x, positive.astype(np.float64), loss="bce_with_logits", outputs=1)[0]
    logits = model(x)
    for loss_fn in (fnn.BCEWithLogitsLoss(), fnn.BCEWithLogitsLoss(pos_weight=3.0)):
        got = loss_fn(pd.DataFrame(logits), labels)
        want = loss_fn(logits, positive.astype(np.float32))
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])


def test_losses_called_directly_take_pandas(pd):
    x, y = _arrays()
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(N, CLASSES)).astype(np.float32)
    soft = rng.dirichlet(np.ones(CLASSES), N)
    weights = rng.random(N)
    cases = [
        (fnn.CrossEntropyLoss(), pd.Series(y, dtype="Int64"), y),
        (fnn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5]), pd.Series(y), y),
        (fnn.CrossEntropyLoss(), pd.DataFrame(soft, columns=["a", "b", "c"]), soft),
        (fnn.MSELoss(), pd.DataFrame(soft).astype("Float64"), soft),
    ]
    for loss_fn, targets, plain in cases:
        got = loss_fn(pd.DataFrame(logits), targets, sample_weight=pd.Series(weights))
        want = loss_fn(logits, plain, sample_weight=weights)
        assert got[0] == want[0], loss_fn
        np.testing.assert_array_equal(got[1], want[1])
        assert got[1].dtype == np.float32


# ------------------------------------------------------------------ pandas error messages
def test_nan_in_a_dataframe_is_named_by_index_label_and_column(pd):
    x, y = _arrays()
    frame = pd.DataFrame(x, columns=["age", "height", "weight", "income", "score"],
                         index=[f"p{i}" for i in range(N)])
    frame.iloc[9, 3] = np.nan
    model = _model()
    message = (r"x contains NaN or Inf \(1 value\(s\), the first at row 'p9' \(position 9\), "
               r"column 'income'\)")
    with pytest.raises(ValueError, match=message):
        model.fit(frame, y, verbose=0)
    with pytest.raises(ValueError, match=message):
        next(fnn.batches(frame, y, shuffle=True))
    with pytest.raises(ValueError, match=message.replace("x contains", "validation x contains")):
        model.fit(x, y, validation_data=(frame, y), verbose=0)
    with pytest.raises(ValueError, match=r"row 117 \(position 2\), column 'income'"):
        model.predict(frame.iloc[7:].set_axis(range(115, 115 + N - 7)))
    plain = pd.DataFrame(x)
    plain.iloc[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"the first at row 4, column 1\)"):
        model.predict(plain)


def test_missing_values_are_named_with_the_column_dtype(pd):
    frame, _ = _mixed_frame(pd)
    _, y = _arrays()
    model = fnn.Sequential(fnn.Linear(5, 3), seed=0).compile(loss="cross_entropy")
    counts = frame.copy()
    counts.loc["r6", "count"] = pd.NA
    counts.loc["r8", "count"] = pd.NA
    with pytest.raises(ValueError, match=r"x has 2 missing value\(s\) \(<NA>\), the first at "
                                         r"row 'r6' \(position 6\), column 'count' \(dtype "
                                         r"Int64\); fill or drop them"):
        model.fit(counts, y, verbose=0)
    with pytest.raises(ValueError, match=r"column 'yes' \(dtype boolean\)"):
        frame2 = frame.copy()
        frame2.loc["r1", "yes"] = pd.NA
        next(fnn.batches(frame2, y))
    labels = pd.Series(y, dtype="Int64")
    labels[3] = pd.NA
    with pytest.raises(ValueError, match=r"targets has 1 missing value\(s\) \(<NA>\), the first "
                                         r"at row 3 \(dtype Int64\)"):
        model.evaluate(frame, labels)
    with pytest.raises(ValueError, match=r"y has 1 missing value\(s\).* row 3 \(dtype Int64\)"):
        next(fnn.batches(frame, labels))


def test_non_numeric_columns_are_named_with_their_real_dtype(pd):
    frame, _ = _mixed_frame(pd)
    _, y = _arrays()
    model = fnn.Sequential(fnn.Linear(6, 3), seed=0).compile(loss="cross_entropy")
    text = frame.assign(city=["Paris", "Oslo"] * (N // 2))
    with pytest.raises(TypeError, match=r"x column 'city' has dtype (str|object)"):
        model.fit(text, y, verbose=0)
    objects = frame.assign(city=pd.Series([1.5, "Oslo"] * (N // 2), dtype=object,
                                          index=frame.index))
    with pytest.raises(TypeError, match=r"x column 'city' has dtype object and holds str "
                                        r"values such as 'Oslo' at row 'r1' \(position 1\)"):
        model.predict(objects)
    category = frame.assign(city=pd.Categorical(["Paris", "Oslo"] * (N // 2)))
    with pytest.raises(TypeError, match=r"x column 'city' is categorical with .* categories "
                                        r"\('Oslo', 'Paris'\); encode it first"):
        next(fnn.batches(category, y))
    dates = frame.assign(city=pd.Timestamp("2026-12-03"))
    with pytest.raises(TypeError, match=r"x column 'city' has dtype datetime64\[.*\], not "
                                        r"numbers"):
        model.predict(dates)
    with pytest.raises(TypeError, match=r"targets \(Series 'species'\) has dtype (str|object)"):
        model.evaluate(frame.assign(city=1.0), pd.Series(["a", "b"] * (N // 2),
                                                          name="species"))


def test_plain_numpy_inputs_keep_the_fast_path():
    """A C-contiguous float32 batch is passed on as it is (no copy) by the conversion."""
    from fastnn.validation import as_input
    x = np.ones((4, K), np.float32)
    assert as_input(x, "x", np.float32, K) is x


def test_other_inputs_are_refused_with_the_fix():
    model = _model()
    with pytest.raises(TypeError, match="x must be an array of numbers, got a NoneType"):
        model.predict(None)
    with pytest.raises(TypeError, match=r"got dtype complex128; keep the real part"):
        model.predict(np.ones((2, K), complex))
    with pytest.raises(TypeError, match=r"got dtype <U1; encode text"):
        model.predict(np.full((2, K), "a"))


def test_importing_fastnn_does_not_import_pandas():
    import subprocess
    import sys
    code = "import sys, fastnn; sys.exit('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_layer_without_a_dtype_takes_the_precision_of_the_columns():
    """A layer built without a dtype computes in the input's precision; for a pandas
    frame or a list that is the precision of its values (nullable Float64: float64)."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": pd.array([1.5, -2.0], dtype="Float64"),
                          "b": pd.array([0.5, 1.0], dtype="Float64")})
    out = fnn.ReLU()(frame)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.5, 0.5], [0.0, 1.0]])
    assert fnn.ReLU()([[1.0, -2.0]]).dtype == np.float64
    assert fnn.ReLU()(np.ones((2, 2), np.float32)).dtype == np.float32
