"""``geolesf weights``: list, describe, fetch and locate catalogued foundation-model weights."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="weights catalog (SAM, CLIP): list, info, fetch, path",
        description="Foundation-model weights the PEFT methods start from (geolesf/weights_catalog/*.yaml), "
        "kept in $GEOLESF_HOME/weights/. Configs name them as weights:NAME, e.g. "
        "model.checkpoint: weights:sam_vit_b.",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="table of weights: name, size, licence, sha256 source, locally present")
    p_info = sub.add_parser("info", help="file, URL, size, sha256, licence, citation and config use of weights")
    p_info.add_argument("name", help="weights name (see `geolesf weights list`)")
    p_fetch = sub.add_parser(
        "fetch", help="download weights (resumable, size and sha256 checked)",
        description="Download into $GEOLESF_HOME/weights/. An interrupted download resumes from its .part "
        "file; a file of the wrong size or sha256 is removed. Where the authors publish no sha256, the first "
        "download's sha256 is pinned in <file>.sha256 and later downloads and uses must match it. Refused in "
        "offline mode (--offline, GEOLESF_OFFLINE=1).")
    p_fetch.add_argument("name", help="weights name")
    p_fetch.add_argument("--force", action="store_true", help="download even when a verified copy exists")
    p_fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_path = sub.add_parser("path", help="verify the local file and print its path (exit 2 when not fetched)")
    p_path.add_argument("name", help="weights name")
    parser.set_defaults(func=run)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _cmd_list() -> int:
    from geolesf.data.weights import get_weights, list_weights

    rows = [["NAME", "FILE", "SIZE", "LICENCE", "SHA256", "LOCAL"]]
    for name in list_weights():
        e = get_weights(name)
        sha = "published" if e.sha256 else ("pinned" if e.pinned() else "unpublished")
        licence = e.licence.split(" (")[0]
        rows.append([name, e.file, _size(e.size), licence, sha, "yes" if e.path.is_file() else "no"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))
    return 0


def _cmd_info(name: str) -> int:
    from geolesf.data.weights import get_weights

    e = get_weights(name)
    if e.sha256:
        sha = f"{e.sha256} ({e.sha256_note or 'published'})"
    else:
        pinned = e.pinned()
        sha = f"{pinned} (pinned locally on first fetch; not published)" if pinned else (e.sha256_note or "unknown")
    out = [f"{e.name}: {e.title}", "",
           f"file:      {e.file}" + (f" ({e.size:,} bytes)" if e.size is not None else " (size not published)"),
           *[f"url:       {u}" for u in e.urls],
           f"sha256:    {sha}",
           f"licence:   {e.licence}"]
    if e.homepage:
        out.append(f"homepage:  {e.homepage}")
    if e.used_by:
        out.append(f"use:       {e.used_by}")
    out.append(f"local:     {e.path if e.path.is_file() else 'not fetched (geolesf weights fetch ' + e.name + ')'}")
    out += ["", "citation:", e.citation]
    print("\n".join(out))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from geolesf.data.weights import fetch_weights

    r = fetch_weights(args.name, force=args.force, progress=not args.no_progress)
    note = "pinned (no published sha256)" if r.pinned else ("verified" if r.entry.sha256 or r.entry.pinned() else "")
    print(f"{r.action:<10} {r.path}  sha256={r.sha256}  {note}".rstrip())
    return 0


def _cmd_path(name: str) -> int:
    from geolesf.data.weights import get_weights, verify_local

    path, _ = verify_local(get_weights(name))
    print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "list":
        return _cmd_list()
    if args.weights_command == "info":
        return _cmd_info(args.name)
    if args.weights_command == "fetch":
        return _cmd_fetch(args)
    return _cmd_path(args.name)
