"""``geolesf data``: list, describe, verify and fetch catalogued datasets."""

from __future__ import annotations

import argparse

VERIFY_HELP = (
    "Compute the sha256 of the local files and compare them with the catalog: OK, MISMATCH, "
    "MISSING or UNKNOWN-CHECKSUM (no checksum recorded) per file. Exit status 0 when no file "
    "is MISMATCH and every required file is present (optional files, such as alternative "
    "versions of a cube, may be MISSING); 1 otherwise; 2 for an unknown dataset."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="dataset catalog: list, info, verify, path, fetch",
        description="The dataset catalog (geolesf/data_catalog/*.yaml). Files are looked for in "
        "$GEOLESF_DATA/<hint>, then $GEOLESF_HOME/data/<name>/, then the data shipped with geolesf.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="table of datasets: name, modality, size, licence, locally present")
    p_info = sub.add_parser("info", help="bands, classes, files, sha256, licence and citation of a dataset")
    p_info.add_argument("name", help="dataset name (see `geolesf data list`)")
    p_verify = sub.add_parser("verify", help="check local files against their sha256", description=VERIFY_HELP)
    p_verify.add_argument("name", help="dataset name")
    p_verify.add_argument("--file", action="append", metavar="F", help="only this file (repeatable)")
    p_path = sub.add_parser(
        "path", help="print the local path of a dataset's files (one a line)",
        description="Print the local path of a dataset's files, one a line: every required file, one --file, "
        "or the files of a --role (cube, ground_truth, train_map, ...). For use in a shell: "
        "geolesf predict $(geolesf data path indian_pines --role cube) ... Exit status 2 (and how to "
        "obtain it) when a file is not present locally.",
    )
    p_path.add_argument("name", help="dataset name")
    which = p_path.add_mutually_exclusive_group()
    which.add_argument("--file", metavar="F", help="this file (name as in `geolesf data info`)")
    which.add_argument("--role", metavar="ROLE", help="the files of this role, e.g. cube or ground_truth")
    p_fetch = sub.add_parser(
        "fetch",
        help="download a dataset (resumable, sha256-checked)",
        description="Download the files of a dataset into $GEOLESF_HOME/data/<name>/ (or --dest). "
        "Interrupted downloads resume from the .part file; a file whose checksum does not match is "
        "removed. Refuses in offline mode and for datasets whose terms forbid automated download.",
    )
    p_fetch.add_argument("name", help="dataset name")
    p_fetch.add_argument("--file", action="append", metavar="F", help="only this file (repeatable)")
    p_fetch.add_argument("--dest", metavar="DIR", help="download folder (default $GEOLESF_HOME/data/<name>)")
    p_fetch.add_argument("--force", action="store_true", help="download even when a verified copy exists")
    p_fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_list() -> int:
    from geolesf.data import catalog

    rows = [["NAME", "MODALITY", "SIZE", "LICENCE", "LOCAL"]]
    for name in catalog.list_datasets():
        entry = catalog.get_dataset(name)
        sizes = [f.size for f in entry.files if f.required]
        known = sum(s for s in sizes if s is not None)
        size = ("≥" if None in sizes and known else "") + (_human(known) if known else "?")
        present = {f.name: catalog.locate(entry, f) is not None for f in entry.files}
        if all(present[f.name] for f in entry.files if f.required):
            local = "yes"
        else:
            local = "partial" if any(present.values()) else "no"
        licence = entry.licence if len(entry.licence) <= 38 else entry.licence[:37] + "…"
        rows.append([name, entry.modality, size, licence, local])
    print(_table(rows))
    return 0


def _cmd_info(name: str) -> int:
    from geolesf.data import catalog

    e = catalog.get_dataset(name)
    out = [f"{e.name}: {e.title}", "", e.description, ""]
    out.append(f"modality:  {e.modality}")
    out.append(f"sensor:    {e.sensor}")
    if e.bands is not None:
        b = e.bands
        text = f"{b.count if b.count is not None else '?'}"
        if b.range_nm:
            text += f", {b.range_nm[0]:g}–{b.range_nm[1]:g} nm"
        if b.wavelengths_nm:
            text += " (" + ", ".join(f"{w:g}" for w in b.wavelengths_nm) + " nm)"
        if b.names:
            text += " [" + ", ".join(b.names) + "]"
        out.append(f"bands:     {text}")
        if b.note:
            out.append(f"           {b.note}")
    out.append(f"licence:   {e.licence}")
    if e.homepage:
        out.append(f"homepage:  {e.homepage}")
    if e.loader:
        out.append(f"loader:    {e.loader}")
    if not e.download_allowed:
        out.append(f"download:  not automated: {e.download_note}")
    if e.classes:
        out += ["", f"classes ({len(e.classes)}):"]
        out += [f"  {c.id:>3}  {c.colour}  {c.name}" for c in e.classes]
    if e.class_remap:
        pairs = ", ".join(f"{k}→{v}" for k, v in e.class_remap.items())
        out += ["", f"class remap (file id → standard id): {pairs}"]
    out += ["", "files:"]
    for f in e.files:
        path = catalog.locate(e, f)
        flags = [] if f.required else ["optional"]
        out.append(f"  {f.name}  ({_human(f.size)}{', ' + ', '.join(flags) if flags else ''})")
        if f.role or f.key:
            out.append(f"    role: {f.role or '-'}" + (f", key: {f.key}" if f.key else ""))
        out.append(f"    sha256: {f.sha256 or 'unknown'}")
        for algo, value in f.checksums.items():
            out.append(f"    {algo}: {value}")
        for url in f.urls:
            out.append(f"    url: {url}")
        if f.loader:
            out.append(f"    loader: {f.loader}")
        if f.note:
            out.append(f"    note: {f.note}")
        out.append(f"    local: {path if path else 'not present'}")
    if e.notes:
        out += ["", "notes:", e.notes]
    out += ["", "citation:", e.citation]
    print("\n".join(out))
    return 0


def _cmd_verify(name: str, files: list[str] | None) -> int:
    from geolesf.data import catalog

    statuses = catalog.verify(name, files)
    width = max(len(s.file.name) for s in statuses)
    for s in statuses:
        where = f"  {s.path}" if s.path else ("  (optional)" if not s.file.required else "")
        line = f"{s.status:<16} {s.file.name:<{width}}{where}"
        if s.detail:
            line += f"  [{s.detail}]"
        if s.status == "UNKNOWN-CHECKSUM":
            line += f"  sha256={s.found_sha256}"
        print(line.rstrip())
    counts = {k: sum(s.status == k for s in statuses) for k in catalog.STATUSES}
    ok = catalog.verify_ok(statuses)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    print(f"{name}: {'OK' if ok else 'FAILED'} ({summary})")
    return 0 if ok else 1


def _cmd_fetch(args: argparse.Namespace) -> int:
    import sys

    from geolesf.data.fetch import fetch

    results = fetch(
        args.name,
        files=args.file,
        dest=args.dest,
        force=args.force,
        progress=not args.no_progress,
        log=lambda message: print(message, file=sys.stderr),
    )
    for r in results:
        state = "verified" if r.verified else "UNVERIFIED (no checksum recorded)"
        print(f"{r.action:<10} {r.path}  sha256={r.sha256}  {state}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        return _cmd_list()
    if args.data_command == "info":
        return _cmd_info(args.name)
    if args.data_command == "verify":
        return _cmd_verify(args.name, args.file)
    if args.data_command == "path":
        from geolesf.data.sources import dataset_file_paths

        for path in dataset_file_paths(args.name, file=args.file, role=args.role):
            print(path)
        return 0
    return _cmd_fetch(args)
