"""Command line: ``fastnn train``, ``fastnn bench`` and ``fastnn warmup`` (also
``python -m fastnn ...``)."""
import argparse
import os
import sys
import time

#: --lr when none is given: SGD's value for this MLP, the usual 1e-3 of the adaptive ones
#: (PyTorch's RMSprop default of 1e-2 diverges on MNIST at batch 128).
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: those defaults depend on other options
    and their help says how."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _optimizer_settings(args):
    """(optimiser class, keyword arguments) from the options; a misplaced option is a
    ValueError before anything is loaded."""
    import fastnn as fnn
    name = args.optimizer or ("adam" if args.model == "transformer" else "sgd")
    kwargs = {"lr": DEFAULT_LR[name] if args.lr is None else args.lr}
    if name == "sgd":
        momentum = 0.9 if args.momentum is None else args.momentum
        kwargs.update(momentum=momentum, nesterov=momentum > 0)
    elif name == "rmsprop" and args.momentum is not None:
        kwargs["momentum"] = args.momentum
    elif args.momentum is not None:
        raise ValueError(f"--momentum applies to sgd and rmsprop, not {name} (Adam's "
                         "moments are its betas)")
    if args.weight_decay is not None:
        kwargs["weight_decay"] = args.weight_decay
    cls = fnn.OPTIMIZERS[name]
    cls(**kwargs)                      # hyperparameter errors now, not after loading MNIST
    return cls, kwargs


#: What each ``--model`` trains for when ``--epochs`` is not given.
DEFAULT_EPOCHS = {"mlp": 10, "transformer": 4}
#: Options that shape one kind of model only (the others are refused with it).
MODEL_OPTIONS = {"mlp": ("hidden", "activation", "batchnorm", "init", "bias_init"),
                 "transformer": ("embed_dim", "heads", "layers", "ff_dim")}
#: Their values when not given.
MODEL_DEFAULTS = {"hidden": [512, 256], "activation": "relu", "batchnorm": False,
                  "init": "he_normal", "bias_init": 0.0,
                  "embed_dim": 64, "heads": 4, "layers": 2, "ff_dim": 128}


def _model_settings(args):
    """Fills in the model options' defaults; an option of the other kind of model, or a
    transformer shape that cannot be built, is a ValueError before anything is loaded."""
    for kind, names in MODEL_OPTIONS.items():
        for name in names:
            if getattr(args, name) is None:
                setattr(args, name, MODEL_DEFAULTS[name])
            elif kind != args.model:
                raise ValueError(f"--{name.replace('_', '-')} applies to --model {kind}, "
                                 f"not {args.model}")
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[args.model]
    if args.model == "transformer":
        for name in ("embed_dim", "heads", "layers", "ff_dim"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(args, name)}")
        if args.embed_dim % args.heads:
            raise ValueError(f"--embed-dim {args.embed_dim} is not divisible by --heads "
                             f"{args.heads} (each head takes embed_dim / heads features)")


def _optimizer(cls, kwargs, model):
    """Weight decay, when there is some (AdamW's default 0.01), applies to the weight
    matrices only, not to the biases."""
    import fastnn as fnn
    decays = kwargs.get("weight_decay", cls().defaults["weight_decay"]) > 0
    return cls(fnn.weight_decay_groups(model) if decays else model.parameters(), **kwargs)


def _mlp_layers(args, widths):
    """Hidden layers Linear [-> BatchNorm1d] -> activation [-> Dropout], then the output
    Linear layer."""
    import fastnn as fnn
    layers = []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers.append(fnn.Linear(fan_in, fan_out, init=args.init, bias_init=args.bias_init,
                                 bias=not args.batchnorm))    # BatchNorm's beta is the bias
        if args.batchnorm:
            layers.append(fnn.BatchNorm1d(fan_out))
        layers.append(fnn.Activation(args.activation))
        if args.dropout:
            layers.append(fnn.Dropout(args.dropout))
    layers.append(fnn.Linear(widths[-2], widths[-1]))
    return layers


def _transformer_layers(args, side):
    """Rows as tokens: Linear(side -> embed_dim), learned positions, ``--layers`` encoder
    layers (post-norm, GELU feed-forward), mean over the rows, Linear(-> 10)."""
    import fastnn as fnn
    layers = [fnn.Linear(side, args.embed_dim), fnn.PositionalEmbedding(side, args.embed_dim)]
    layers += [fnn.TransformerEncoderLayer(args.embed_dim, args.heads, ff_dim=args.ff_dim,
                                           dropout=args.dropout, activation="gelu")
               for _ in range(args.layers)]
    return layers + [fnn.MeanPool(), fnn.Linear(args.embed_dim, 10)]


def _train(args):
    import numba

    import fastnn as fnn

    if args.threads:
        numba.set_num_threads(args.threads)
    _model_settings(args)
    optimizer_cls, optimizer_kwargs = _optimizer_settings(args)
    if args.plot:                      # what would stop the picture: now, not after training
        from .plotting import require_matplotlib
        try:
            require_matplotlib()
        except ImportError as exc:
            print(f"fastnn train: error: --plot: {exc}", file=sys.stderr)
            return 2
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise ValueError(f"--plot {args.plot}: the directory {folder} does not exist")
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = fnn.load_mnist(args.data, dtype=args.dtype)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    print(f"MNIST: {len(x_train):,} training and {len(x_test):,} test images "
          f"(loaded in {time.perf_counter() - start:.1f} s)")

    if args.model == "transformer":
        # each image as a sequence of its 28 rows of 28 pixels
        side = int(round(x_train.shape[1] ** 0.5))
        x_train = x_train.reshape(len(x_train), side, side)
        x_test = x_test.reshape(len(x_test), side, side)
        layers = _transformer_layers(args, side)
        description = (f"transformer: rows of {side} pixels -> {args.embed_dim} wide, "
                       f"{args.layers} encoder layer(s), {args.heads} heads, "
                       f"feed-forward {args.ff_dim}, dropout {args.dropout:g}, mean pool")
    else:
        widths = [x_train.shape[1], *args.hidden, 10]
        layers = _mlp_layers(args, widths)
        extras = "".join([", BatchNorm" if args.batchnorm else "",
                          f", dropout {args.dropout:g}" if args.dropout else ""])
        description = (f"MLP {'-'.join(map(str, widths))} ({args.activation}, "
                       f"{args.init}{extras})")
    model = fnn.Sequential(*layers, dtype=args.dtype, backend=args.backend, seed=args.seed)
    model.compile(optimizer=_optimizer(optimizer_cls, optimizer_kwargs, model),
                  loss="cross_entropy", metrics=["accuracy"])
    print(f"model: {description}, "
          f"{args.dtype}, backend {fnn.get_backend(args.backend).name}, "
          f"{numba.get_num_threads()} thread(s); {model.optimizer!r}, "
          f"batch {args.batch_size}, {args.epochs} epochs")

    train_start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), seed=args.seed, verbose=args.verbose)
    total = time.perf_counter() - train_start
    h = history.history
    if args.verbose == 0:
        for e in range(args.epochs):
            print(f"epoch {e + 1}: loss {h['loss'][e]:.4f}  train acc {h['accuracy'][e]:.4f}  "
                  f"test acc {h['val_accuracy'][e]:.4f}  {h['samples_per_second'][e]:,.0f} samples/s")
    accuracy = h["val_accuracy"][-1]
    print(f"test accuracy {accuracy:.2%} (loss {h['val_loss'][-1]:.4f}); training took "
          f"{total:.1f} s including JIT compilation, {time.perf_counter() - start:.1f} s in all")
    if args.plot:
        fnn.plot_history(history, args.plot, title=description)
        print(f"training curves written to {args.plot}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn command line")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train an MLP on MNIST and report accuracy",
                                formatter_class=_HelpFormatter)
    train.add_argument("--model", default="mlp", choices=["mlp", "transformer"],
                       help="an MLP on the 784 pixels, or a transformer encoder reading each "
                            "image as a sequence of its 28 rows")
    train.add_argument("--epochs", type=int, default=None,
                       help="default " + ", ".join(f"{v} ({k})"
                                                   for k, v in DEFAULT_EPOCHS.items()))
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--optimizer", default=None, choices=sorted(DEFAULT_LR),
                       help="PyTorch's update rules and defaults, except --lr; default sgd "
                            "(mlp), adam (transformer)")
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate; default " + ", ".join(
                           f"{k} {v:g}" for k, v in DEFAULT_LR.items()))
    train.add_argument("--momentum", type=float, default=None,
                       help="sgd: Nesterov momentum (default 0.9); rmsprop: momentum "
                            "(default 0)")
    train.add_argument("--weight-decay", type=float, default=None,
                       help="on the weight matrices, not the biases; default: the "
                            "optimizer's (adamw 0.01, the others 0)")
    train.add_argument("--hidden", type=lambda s: [int(w) for w in s.split(",") if w],
                       default=None, help="mlp: hidden layer widths, comma separated "
                                          "(default 512,256)")
    train.add_argument("--activation", default=None,
                       help="mlp: hidden activation (default relu)")
    train.add_argument("--batchnorm", action="store_const", const=True, default=None,
                       help="BatchNorm1d after each hidden Linear layer (before the activation)")
    train.add_argument("--dropout", type=float, default=0.0,
                       help="Dropout with this probability after each hidden activation (mlp), "
                            "in the encoder layers (transformer)")
    train.add_argument("--embed-dim", type=int, default=None,
                       help="transformer: token width (default 64)")
    train.add_argument("--heads", type=int, default=None,
                       help="transformer: attention heads (default 4)")
    train.add_argument("--layers", type=int, default=None,
                       help="transformer: encoder layers (default 2)")
    train.add_argument("--ff-dim", type=int, default=None,
                       help="transformer: feed-forward width (default 128)")
    train.add_argument("--init", default=None,
                       help="mlp: weight initialisation (default he_normal)")
    train.add_argument("--bias-init", type=float, default=None, help="mlp: (default 0)")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    train.add_argument("--backend", default="numba", choices=["numba", "numpy", "cuda"])
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=0, help="Numba threads (0: all cores)")
    train.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    train.add_argument("--data", default=None, help="directory of MNIST IDX files (optional)")
    train.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                       help="0 silent, 1 a live progress bar, 2 one line per epoch")
    train.add_argument("--plot", default=None, metavar="PNG",
                       help="write a picture of the loss and accuracy curves (training and "
                            "test) to this PNG file (needs matplotlib: "
                            "pip install \"fastnn[plot]\")")
    bench = commands.add_parser("bench", help="measure the performance targets against "
                                "NumPy/BLAS (and PyTorch, JAX if installed)")
    from .bench import add_arguments as add_bench_arguments
    add_bench_arguments(bench)
    warm = commands.add_parser("warmup", help="compile the kernels of typical models for this "
                               "CPU once, e.g. in a Docker image or CI (fastnn.warmup)")
    warm.add_argument("--dtype", action="append", choices=["float32", "float64"],
                      help="repeatable (--dtype float32 --dtype float64); default float32")
    warm.add_argument("--all", action="store_true",
                      help="also attention, transformer and embedding layers")
    args = parser.parse_args(argv)
    if args.command == "warmup":
        from .warmup import warmup
        warmup(dtypes=args.dtype or ["float32"], models="all" if args.all else ["mlp"])
        return 0
    if args.command == "train":
        from . import BackendUnavailableError, DatasetNotFoundError
        try:
            return _train(args)
        except (BackendUnavailableError, DatasetNotFoundError, ValueError, TypeError) as exc:
            # what the user asked for cannot run here: the reason, without a traceback
            print(f"fastnn train: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "bench":
        # No environment of its own: the bench measures the thread-pool settings users get
        # (fastnn.threads applies its spin defaults on import).
        from .bench import run_from_args
        return run_from_args(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
