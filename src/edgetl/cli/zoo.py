"""The model zoo: ``edgetl models``, ``edgetl imagenet``, ``edgetl weights fetch|import|list``."""

from __future__ import annotations

import sys

from ._print import print_json


def cmd_models(args) -> int:
    from ..zoo import get_spec, list_backbones
    from ..zoo.profile import profile_backbone
    from ..zoo.weights import weights_status

    rows = []
    for name in list_backbones():
        spec = get_spec(name)
        row = profile_backbone(name).to_dict()
        row["weights"] = weights_status(spec)
        row["top1"] = spec.top1
        row["description"] = spec.description
        rows.append(row)
    if args.json:
        print_json(rows)
        return 0
    print(f"{'name':<22} {'params':>8} {'MACs':>8} {'conv p/MAC':>11} {'FC p/MAC':>11} {'size':>5} {'top-1':>6}  weights")
    for r in rows:
        top1 = f"{r['top1']:.1f}" if r["top1"] else "-"
        weights = "on this machine" if r["weights"]["available"] else "missing: " + r["weights"]["how"].split("; ", 1)[-1]
        print(f"{r['name']:<22} {r['params'] / 1e6:7.2f}M {r['macs'] / 1e9:7.3f}G "
              f"{r['conv_param_share']:5.0%}/{r['conv_mac_share']:4.0%} {r['fc_param_share']:5.0%}/{r['fc_mac_share']:4.0%} "
              f"{r['input_size']:>5} {top1:>6}  {weights}")
    return 0


def cmd_imagenet(args) -> int:
    from ..imagenet import classify_imagenet

    results = classify_imagenet(args.images, backbone=args.backbone, top=args.top, cache_dir=args.cache_dir)
    if args.json:
        print_json(results)
        return 0
    for res in results:
        print(res["path"])
        for item in res["top"]:
            print(f"  {item['probability']:6.1%}  {item['label']} ({item['index']})")
    return 0


def cmd_weights(args) -> int:
    from ..zoo.fetch import fetch_weights, import_weights, list_weights

    if args.weights_command == "fetch":
        print(f"{args.name}: {fetch_weights(args.name, url=args.url)}")
        return 0
    if args.weights_command == "import":
        print(f"{args.name}: {import_weights(args.name, args.file)}")
        return 0
    if args.weights_command == "list":
        rows = list_weights()
        if args.json:
            print_json(rows)
            return 0
        print(f"{'name':<22} {'source':<9} weights")
        for r in rows:
            where = r["path"] if r["available"] else "missing: " + r["how"].split("; ", 1)[-1]
            print(f"{r['name']:<22} {r['source']:<9} {where}")
        return 0
    args.weights_parser.print_help(sys.stderr)
    return 2


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("models", parents=[common], help="list the backbones: parameters, MACs, shares, weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("imagenet", parents=[common], help="classify photos with the pretrained 1000-class ImageNet head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_imagenet)

    p = sub.add_parser("weights", help="fetch, import or list pretrained backbone weights ($EDGETL_WEIGHTS_DIR)")
    p.set_defaults(func=cmd_weights, weights_command=None, weights_parser=p, verbose=False)
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    w = wsub.add_parser("fetch", parents=[verbose_flag], help="download a backbone's published checkpoint (sha256-checked)")
    w.add_argument("name", metavar="NAME")
    w.add_argument("--url", default=None, help="download from this address instead (a mirror); same checks")
    w = wsub.add_parser("import", parents=[verbose_flag], help="use a checkpoint file you have as a backbone's default weights")
    w.add_argument("name", metavar="NAME")
    w.add_argument("file", metavar="FILE", help=".pth state dict or .safetensors file")
    w = wsub.add_parser("list", parents=[verbose_flag], help="which backbones have their weights on this machine")
    w.add_argument("--json", action="store_true")
