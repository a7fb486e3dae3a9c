"""The results table: one line per measured variant, baselines beside the portal."""

from __future__ import annotations

from dataclasses import asdict

from bench.common import Row


def as_dict(row: Row) -> dict:
    return asdict(row)


def _ms(latency: dict, key: str) -> str:
    value = latency.get(key)
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _rss(value: dict | None) -> str:
    return "-" if not value else f"{value['max_mib']:.0f}"


def _ratio(row: Row) -> str:
    return "-" if row.ratio is None else f"{row.ratio:.2f}"


def _result(row: Row) -> str:
    if row.passed is None:
        return ""
    return "pass" if row.passed else "MISS"


def _throughput(row: Row) -> str:
    if row.throughput is None:
        return "-"
    return f"{row.throughput:,.1f}{row.throughput_unit}"


COLUMNS = [
    ("scenario", 22, lambda r: r.scenario),
    ("variant", 34, lambda r: r.variant),
    ("n", 7, lambda r: f"{r.n:,}" if r.n else "-"),
    ("p50 ms", 7, lambda r: _ms(r.latency, "p50_ms")),
    ("p95 ms", 7, lambda r: _ms(r.latency, "p95_ms")),
    ("p99 ms", 7, lambda r: _ms(r.latency, "p99_ms")),
    ("max ms", 7, lambda r: _ms(r.latency, "max_ms")),
    ("throughput", 12, _throughput),
    ("RSS wrk", 7, lambda r: _rss(r.rss_worker)),
    ("RSS web", 7, lambda r: _rss(r.rss_web)),
    ("ratio", 6, _ratio),
    ("goal", 14, lambda r: r.goal),
    ("result", 6, _result),
]


def format_table(rows: list[Row]) -> str:
    header = " | ".join(f"{name:<{width}}" for name, width, _ in COLUMNS)
    lines = [header, "-+-".join("-" * width for _, width, _ in COLUMNS)]
    for row in rows:
        lines.append(" | ".join(f"{str(get(row))[:width]:<{width}}" for _, width, get in COLUMNS))
    notes = [f"  {row.scenario} / {row.variant}: {row.notes}" for row in rows if row.notes]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    """The same table for docs/benchmarks.md."""
    lines = [
        "| " + " | ".join(name for name, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(get(row)) for _, _, get in COLUMNS) + " |")
    return "\n".join(lines)


def print_table(rows: list[Row]) -> None:
    print("\n" + format_table(rows) + "\n", flush=True)
    print("RSS = peak resident set size (VmHWM, MiB) of the largest process of the worker / web at the end of the")
    print("scenario; ratio = portal ÷ baseline (or as the goal states); MISS = goal not met.", flush=True)


def main() -> None:
    """`python -m bench.report [bench/results.json]`: the table as Markdown, for docs/benchmarks.md."""
    import json
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json")
    data = json.loads(path.read_text())
    rows = [Row(**row) for row in data["rows"]]
    machine = data.get("machine", {})
    print(
        f"{data['mode']} run, {data['finished_at']}, {data['duration_s']:.0f} s; {machine.get('cores')} cores "
        f"({machine.get('cpu')}), {machine.get('ram_gib')} GiB; Python {machine.get('python')}, PostgreSQL "
        f"{machine.get('postgres')}, Redis {machine.get('redis')}; "
        + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
        + f"; commit {machine.get('git_commit')}; load average at start {machine.get('load_average_at_start')}\n"
    )
    print(markdown_table(rows))
    print()
    for row in rows:
        if row.notes:
            print(f"- {row.scenario} / {row.variant}: {row.notes}")


if __name__ == "__main__":
    main()
