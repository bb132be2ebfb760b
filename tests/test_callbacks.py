"""fit's callbacks (Keras's shape), validation_split and initial_epoch."""
import csv

import numpy as np
import pytest

import fastnn as fnn


def blobs(n=240, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def make_model(lr=0.05, **compile_kw):
    model = fnn.Sequential(fnn.Linear(6, 12), fnn.ReLU(), fnn.Linear(12, 3), seed=0)
    return model.compile(optimizer=fnn.SGD(lr=lr, momentum=0.9), loss="cross_entropy",
                         metrics=["accuracy"], **compile_kw)


class Recorder(fnn.Callback):
    """Every call, and the model's state at the end of every epoch."""

    def __init__(self):
        self.calls, self.states = [], {}

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", sorted(logs)))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))
        self.states[epoch] = self.model.state_dict()

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))


class Scripted(fnn.Callback):
    """Replaces a logged value by a scripted sequence (placed before the callback under
    test), so that the best epoch is known in advance."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def assert_state_equal(model, state):
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)


# --------------------------------------------------------------------------- protocol
def test_hooks_are_called_in_keras_order_with_logs_and_params():
    x, y = blobs(n=100)
    model, recorder = make_model(), Recorder()
    history = model.fit(x, y, epochs=2, batch_size=40, validation_data=blobs(n=30, seed=1),
                        callbacks=[recorder], verbose=0, seed=0)
    epoch_keys = ["accuracy", "loss", "samples_per_second", "val_accuracy", "val_loss"]
    batch = lambda i: [("batch_begin", i), ("batch_end", i, ["accuracy", "loss"])]
    expected = [("train_begin",)]
    for epoch in range(2):
        expected += [("epoch_begin", epoch), *batch(0), *batch(1), *batch(2),
                     ("epoch_end", epoch, epoch_keys)]
    expected.append(("train_end", epoch_keys))
    assert recorder.calls == expected
    assert recorder.model is model and model.history is history
    assert recorder.params == {"epochs": 2, "initial_epoch": 0, "steps": 3, "samples": 100,
                               "verbose": 0, "do_validation": True,
                               "metrics": ["loss", "accuracy", "val_loss", "val_accuracy"]}
    assert history.epoch == [0, 1]


def test_stop_training_from_a_batch_ends_the_epoch_early():
    class StopAfterTwoBatches(fnn.Callback):
        def on_batch_end(self, batch, logs=None):
            self.model.stop_training = batch == 1

    x, y = blobs(n=100)
    model = make_model()
    history = model.fit(x, y, epochs=5, batch_size=10, callbacks=[StopAfterTwoBatches()],
                        shuffle=False, verbose=0)
    assert history.epoch == [0]          # the stopped epoch is still recorded, as in Keras
    reference = make_model()             # the same two batches by hand
    loss_fn, opt = fnn.CrossEntropyLoss(), reference.optimizer
    losses = []
    for xb, yb in list(fnn.batches(x, y, batch_size=10))[:2]:
        loss, grad = loss_fn(reference(xb), yb)
        opt.zero_grad(); reference.backward(grad); opt.step()
        losses.append(loss)
    assert history.history["loss"][0] == pytest.approx(np.mean(losses), rel=1e-6)
    assert_state_equal(model, reference.state_dict())


def test_callbacks_argument_errors():
    x, y = blobs(n=20)
    model = make_model()
    with pytest.raises(TypeError, match="not a fastnn.Callback"):
        model.fit(x, y, callbacks=[object()], verbose=0)
    with pytest.raises(TypeError, match="list of fastnn.Callback"):
        model.fit(x, y, callbacks="early", verbose=0)
    assert model.fit(x, y, callbacks=fnn.Callback(), verbose=0).epoch == [0]


def test_divergence_keeps_the_history_of_finished_epochs():
    class Explode(fnn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer.lr = 1e30

    x, y = blobs(n=60)
    model = make_model()
    with pytest.raises(fnn.TrainingDivergedError):
        model.fit(x, y, epochs=10, batch_size=20, callbacks=[Explode()], verbose=0)
    assert model.history.epoch == [0, 1]


# --------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    x, y = blobs()
    model, recorder = make_model(), Recorder()
    stop = fnn.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    val_losses = [1.0, 0.5, 0.6, 0.55, 0.4, 0.3]          # best: epoch 1, then 2 worse
    history = model.fit(x, y, epochs=6, validation_data=blobs(n=30, seed=1), verbose=0,
                        callbacks=[Scripted("val_loss", val_losses), stop, recorder])
    assert history.epoch == [0, 1, 2, 3]
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1 and stop.best == 0.5
    assert_state_equal(model, recorder.states[1])
    assert not np.array_equal(recorder.states[1]["0.weight"], recorder.states[3]["0.weight"])


def test_early_stopping_min_delta_mode_and_no_restore():
    x, y = blobs()
    model, recorder = make_model(), Recorder()
    # accuracy: "auto" means max; 0.905 is not better than 0.9 by more than min_delta
    stop = fnn.EarlyStopping(monitor="accuracy", min_delta=0.01, patience=1)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[
        Scripted("accuracy", [0.8, 0.9, 0.905, 0.95, 0.99]), stop, recorder])
    assert history.epoch == [0, 1, 2] and stop.best_epoch == 1
    assert_state_equal(model, recorder.states[2])          # not restored
    stop = fnn.EarlyStopping(monitor="loss", mode="max", patience=0)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[
        Scripted("loss", [1.0, 2.0, 1.5, 3.0, 4.0]), stop])
    assert history.epoch == [0, 1, 2]


def test_early_stopping_restores_the_best_real_validation_loss():
    x, y = blobs()
    x_val, y_val = blobs(n=60, seed=3)
    model = make_model(lr=0.3)
    history = model.fit(x, y, epochs=8, batch_size=16, validation_data=(x_val, y_val),
                        seed=0, verbose=0,
                        callbacks=[fnn.EarlyStopping(patience=8, restore_best_weights=True)])
    best = min(history.history["val_loss"])
    assert model.evaluate(x_val, y_val)["loss"] == pytest.approx(best, rel=1e-6)


def test_monitoring_what_fit_does_not_log_is_a_clear_error():
    x, y = blobs(n=20)
    with pytest.raises(ValueError, match="validation_data=... or validation_split"):
        make_model().fit(x, y, callbacks=[fnn.EarlyStopping()], verbose=0)
    with pytest.raises(ValueError, match="it logs loss, accuracy"):
        make_model().fit(x, y, callbacks=[fnn.ModelCheckpoint("m.fnn", monitor="mae",
                                                              save_best_only=True)], verbose=0)
    with pytest.raises(ValueError, match="unknown mode"):
        fnn.EarlyStopping(mode="lowest")


# --------------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_saves_best_epochs_that_load(tmp_path):
    x, y = blobs()
    model, recorder = make_model(), Recorder()
    pattern = str(tmp_path / "model-{epoch:02d}-{val_loss:.1f}.fnn")
    model.fit(x, y, epochs=4, validation_data=blobs(n=30, seed=1), verbose=0, callbacks=[
        Scripted("val_loss", [0.9, 0.7, 0.8, 0.2]),
        fnn.ModelCheckpoint(pattern, save_best_only=True), recorder])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model-01-0.9.fnn", "model-02-0.7.fnn", "model-04-0.2.fnn"]
    for name, epoch in zip(names, (0, 1, 3)):
        loaded = fnn.load(tmp_path / name)
        assert_state_equal(loaded, recorder.states[epoch])
        assert loaded.optimizer is not None


def test_model_checkpoint_every_epoch_and_bad_patterns(tmp_path):
    x, y = blobs(n=60)
    model = make_model()
    path = tmp_path / "last.fnn"
    model.fit(x, y, epochs=2, verbose=0, callbacks=[fnn.ModelCheckpoint(path)])
    assert_state_equal(fnn.load(path), model.state_dict())
    with pytest.raises(ValueError, match="its fields may be"):
        model.fit(x, y, verbose=0,
                  callbacks=[fnn.ModelCheckpoint(str(tmp_path / "{val_acc}.fnn"))])


# --------------------------------------------------------------------------- CSVLogger
def read_csv(path, separator=","):
    with open(path, newline="") as file:
        return list(csv.reader(file, delimiter=separator))


def test_csv_logger_writes_the_history(tmp_path):
    x, y = blobs(n=60)
    path = tmp_path / "log.csv"
    model = make_model()
    history = model.fit(x, y, epochs=3, validation_data=blobs(n=20, seed=1), verbose=0,
                        callbacks=[fnn.CSVLogger(path)])
    rows = read_csv(path)
    keys = ["accuracy", "loss", "samples_per_second", "val_accuracy", "val_loss"]
    assert rows[0] == ["epoch", *keys] and len(rows) == 4
    for row, epoch in zip(rows[1:], history.epoch):
        assert int(row[0]) == epoch
        assert [float(v) for v in row[1:]] == [history.history[k][epoch] for k in keys]
    # append: no second header; epochs go on with initial_epoch
    model.fit(x, y, epochs=5, initial_epoch=3, validation_data=blobs(n=20, seed=1), verbose=0,
              callbacks=[fnn.CSVLogger(path, append=True)])
    rows = read_csv(path)
    assert [r[0] for r in rows] == ["epoch", "0", "1", "2", "3", "4"]
    # not append: replaced; another separator
    model.fit(x, y, epochs=1, verbose=0, callbacks=[fnn.CSVLogger(path, separator=";")])
    assert read_csv(path, ";") == [["epoch", "accuracy", "loss", "samples_per_second"],
                                   ["0", *read_csv(path, ";")[1][1:]]]


# --------------------------------------------------------------------------- learning rate
def test_learning_rate_scheduler_with_a_function_and_with_a_schedule():
    x, y = blobs(n=60)
    seen = []

    def halve(epoch, lr):
        seen.append((epoch, lr))
        return 0.1 * 0.5 ** epoch

    a = make_model()
    ha = a.fit(x, y, epochs=3, seed=0, verbose=0,
               callbacks=[fnn.LearningRateScheduler(halve)])
    assert ha.history["lr"] == [0.1, 0.05, 0.025]
    assert seen == [(0, 0.05), (1, 0.1), (2, 0.05)]
    b = make_model(lr=0.1)
    hb = b.fit(x, y, epochs=3, seed=0, verbose=0,
               callbacks=[fnn.LearningRateScheduler(fnn.StepLR(step_size=1, gamma=0.5))])
    assert hb.history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert hb.history["loss"] == pytest.approx(ha.history["loss"], rel=1e-6)
    plateau = fnn.ReduceLROnPlateau(factor=0.5, patience=0)
    c = make_model(lr=0.1)
    hc = c.fit(x, y, epochs=3, verbose=0, callbacks=[
        Scripted("loss", [1.0, 2.0, 3.0]), fnn.LearningRateScheduler(plateau)])
    # the lr logged is the one the epoch trained with; worse after epochs 1 and 2
    assert hc.history["lr"] == pytest.approx([0.1, 0.1, 0.05])
    assert c.optimizer.lr == pytest.approx(0.025)


def test_learning_rate_scheduler_errors():
    x, y = blobs(n=20)
    with pytest.raises(TypeError, match="function"):
        fnn.LearningRateScheduler(0.1)
    model = make_model()
    with pytest.raises(ValueError, match="learning rate the schedule returned"):
        model.fit(x, y, verbose=0, callbacks=[fnn.LearningRateScheduler(lambda e, lr: -1.0)])
    step = fnn.StepLR(step_size=1)
    model.compile(optimizer="sgd", loss="cross_entropy", lr_schedule=step)
    with pytest.raises(ValueError, match="one place only"):
        model.fit(x, y, verbose=0, callbacks=[fnn.LearningRateScheduler(step)])


# --------------------------------------------------------------------------- fit arguments
def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = blobs(n=100)
    a, b = make_model(), make_model()
    ha = a.fit(x, y, epochs=2, validation_split=0.25, seed=0, verbose=0)
    hb = b.fit(x[:75], y[:75], epochs=2, validation_data=(x[75:], y[75:]), seed=0, verbose=0)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert ha.history[key] == hb.history[key]
    with pytest.raises(ValueError, match="not both"):
        a.fit(x, y, validation_split=0.2, validation_data=(x, y), verbose=0)
    with pytest.raises(ValueError, match="no training or no validation"):
        a.fit(x[:1], y[:1], validation_split=0.5, verbose=0)
    with pytest.raises(ValueError, match="validation_split must be <"):
        a.fit(x, y, validation_split=1.0, verbose=0)


def test_initial_epoch_continues_the_numbering(capsys):
    x, y = blobs(n=60)
    model, recorder = make_model(), Recorder()
    model.fit(x, y, epochs=2, verbose=0)
    history = model.fit(x, y, epochs=4, initial_epoch=2, verbose=2, callbacks=[recorder])
    assert history.epoch == [2, 3] and model.history is history
    assert [c[1] for c in recorder.calls if c[0] == "epoch_begin"] == [2, 3]
    out = capsys.readouterr().out
    assert "Epoch 3/4" in out and "Epoch 4/4" in out and "Epoch 1/" not in out
    with pytest.raises(ValueError, match="pass epochs=7"):
        model.fit(x, y, epochs=2, initial_epoch=2, verbose=0)
