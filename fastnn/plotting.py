"""A picture of the training curves: :func:`plot_history` writes a PNG.

matplotlib is an optional extra (``pip install "fastnn[plot]"``), imported when a
picture is asked for, never by ``import fastnn``.  The figure is a
:class:`matplotlib.figure.Figure` saved through its own Agg canvas, not a pyplot figure:
nothing global changes (no backend switch, no figure left open in a notebook or in the
user's pyplot state), and it works on a machine without a display.
"""
import math
import os

#: Logged per epoch but not curves of the model's quality (the learning rate and the
#: speed have their own scales and meaning); left out of the picture.
NOT_PLOTTED = ("samples_per_second", "lr")

_INSTALL = 'pip install "fastnn[plot]"'


def _figure_class():
    """:class:`matplotlib.figure.Figure`, or an ImportError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plotting the training curves needs matplotlib, which is not "
                          f"installed ({exc}); install it with  {_INSTALL}") from exc
    return Figure


def require_matplotlib():
    """Raise the ImportError of :func:`plot_history` now if matplotlib is missing
    (``fastnn train --plot`` checks before training, not after)."""
    _figure_class()


def _curves(history):
    """``(epochs, {quantity: (train values or None, validation values or None)})``
    from a History or its ``.history`` dict, in the order the quantities were logged."""
    if hasattr(history, "history") and isinstance(history.history, dict):
        logs, epochs = history.history, list(getattr(history, "epoch", []))
    elif isinstance(history, dict):
        logs, epochs = history, []
    else:
        raise TypeError(f"history must be a History (what fit returns) or its .history "
                        f"dict, got {type(history).__name__}")
    logs = {key: list(values) for key, values in logs.items() if key not in NOT_PLOTTED
            and key.removeprefix("val_") not in NOT_PLOTTED}
    if not logs or not any(logs.values()):
        raise ValueError("the history holds no epochs to plot (fit it first, or pass a dict "
                         "such as {'loss': [...], 'val_loss': [...]})")
    lengths = {len(values) for values in logs.values()}
    if len(lengths) != 1:
        raise ValueError(f"the history's lists differ in length: "
                         f"{ {k: len(v) for k, v in logs.items()} }")
    n = lengths.pop()
    if len(epochs) != n:
        epochs = list(range(n))
    quantities = {}
    for key in logs:
        name = key.removeprefix("val_")
        quantities.setdefault(name, [logs.get(name), logs.get(f"val_{name}")])
    return [e + 1 for e in epochs], quantities        # epochs shown 1-based, as fit prints


def plot_history(history, path, *, columns=3, panel_size=(4.5, 3.5), dpi=100, title=None):
    """Write a PNG of the loss and metric curves of a fit, one panel per quantity.

    Each panel shows a quantity (``loss``, ``accuracy``, ``mae``, ...) per epoch, on the
    training data and, when the history has ``val_<quantity>``, on the validation data.
    The learning rate and samples/s are not plotted.

    Parameters
    ----------
    history : History or dict
        What :meth:`fit <fastnn.Sequential.fit>` returns (``model.history``), or its
        ``.history`` dict ``{"loss": [...], "val_loss": [...], ...}`` (lists of equal length).
    path : str, os.PathLike or binary file
        Where to write the PNG.
    columns : int, default 3
        Panels per row (fewer when there are fewer quantities).
    panel_size : (width, height) in inches, default (4.5, 3.5)
    dpi : int, default 100
        The image is ``columns * width * dpi`` by ``rows * height * dpi`` pixels.
    title : str, optional
        A title above the panels.

    Returns
    -------
    path
        ``path``, as given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "fastnn[plot]"``).
    """
    Figure = _figure_class()
    epochs, quantities = _curves(history)
    columns = max(1, min(int(columns), len(quantities)))
    rows = math.ceil(len(quantities) / columns)
    width, height = panel_size
    figure = Figure(figsize=(columns * width, rows * height), dpi=dpi,
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    marker = "o" if len(epochs) <= 30 else None       # dots help when there are few
    for ax, (name, (train, val)) in zip(axes, quantities.items()):
        if train is not None:
            ax.plot(epochs, train, marker=marker, markersize=3, label="training")
        if val is not None:
            ax.plot(epochs, val, marker=marker, markersize=3, linestyle="--",
                    label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    for ax in axes[len(quantities):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, wrap=True)        # a long title wraps, not clipped
    figure.savefig(os.fspath(path) if isinstance(path, os.PathLike) else path, format="png",
                   dpi=dpi)
    return path
