"""``edgetl device add|fit|predict``: the phone's side, on this machine
(edgetl.runtime only: never torch)."""

from __future__ import annotations

import sys

from ._print import print_predictions


def cmd_device(args) -> int:
    from ..runtime.personalize import Personalizer

    # add and fit change the state: each holds the state folder's lock from
    # reading the state to saving it, so a second command waits, never loses.
    if args.device_command == "add":
        with Personalizer.edit(args.run_dir, args.state_dir, int8=args.int8) as p:
            label = args.label.strip()  # as add_examples stores it
            new = label not in p.labels
            n = p.add_examples(args.images, label)
            p.save()
        what = "new class, usable now; 'edgetl device fit' refines it" if new else "known class"
        print(f"added {n} example{'s' if n != 1 else ''} of '{label}' ({what}); "
              f"{p.counts()[label]} stored for it, {len(p.labels)} classes in {args.state_dir}")
        return 0
    if args.device_command == "fit":
        with Personalizer.edit(None, args.state_dir) as p:
            history = p.fit(epochs=args.epochs)
            p.save()
        print(f"trained the head for {args.epochs} epochs on {len(p.stored_labels)} stored examples of "
              f"{len(p.labels)} classes: loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
        return 0
    if args.device_command == "predict":
        p = Personalizer(None, args.state_dir)
        print_predictions(args.images, p.predict(args.images), args.json)
        return 0
    args.device_parser.print_help(sys.stderr)
    return 2


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("device", help="learn on the device: add examples and classes, fit, predict (no torch)")
    p.set_defaults(func=cmd_device, device_command=None, device_parser=p, verbose=False)
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    d = dsub.add_parser("add", parents=[verbose_flag], help="embed images as examples of a label (a new label is a new class)")
    d.add_argument("run_dir", metavar="RUN_DIR")
    d.add_argument("state_dir", metavar="STATE_DIR", help="where the device keeps what it learned (created if missing)")
    d.add_argument("--label", required=True, metavar="NAME")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument("--int8", action="store_true", help="embed with features.int8.onnx (when starting a state)")
    d = dsub.add_parser("fit", parents=[verbose_flag], help="train the head on all stored examples (train_step.onnx)")
    d.add_argument("state_dir", metavar="STATE_DIR")
    d.add_argument("--epochs", type=int, default=20)
    d = dsub.add_parser("predict", parents=[verbose_flag], help="label images with the personalized model")
    d.add_argument("state_dir", metavar="STATE_DIR")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument("--json", action="store_true")
