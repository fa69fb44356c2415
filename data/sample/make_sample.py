"""Write the bundled candle sample: Binance spot 1m, BTC/ETH/DOGE, 2021-05-10 to the files' end.

Re-runnable and deterministic: rows are copied byte for byte from the shared dataset and
gzipped with mtime=0 and no file name, so the same input always gives the same bytes.

    .venv/bin/python data/sample/make_sample.py [--source DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

SOURCE = Path("/work/shared/data/binance_spot_1m_2021-04-02_2021-05-20")
OUT = Path(__file__).resolve().parent / "binance_spot_1m"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
START_MS = 1_620_604_800_000  # 2021-05-10T00:00:00Z
HEADER = b"timestamp_ms,open,high,low,close,volume"


def cut(raw_csv: bytes) -> tuple[bytes, int]:
    """Header plus the rows with timestamp >= START_MS, unchanged; and their count."""
    lines = raw_csv.splitlines()
    if lines[0].strip() != HEADER:
        raise SystemExit(f"unexpected header {lines[0]!r}")
    rows = [ln for ln in lines[1:] if ln.strip() and int(ln.split(b",", 1)[0]) >= START_MS]
    return b"\n".join([HEADER, *rows]) + b"\n", len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for sym in SYMBOLS:
        csv, n = cut(gzip.decompress((args.source / f"{sym}.csv.gz").read_bytes()))
        blob = gzip.compress(csv, compresslevel=9, mtime=0)
        (OUT / f"{sym}.csv.gz").write_bytes(blob)
        total += len(blob)
        print(
            f"{sym}.csv.gz  rows={n}  bytes={len(blob)}  sha256={hashlib.sha256(blob).hexdigest()}"
        )
    print(f"total bytes={total}")


if __name__ == "__main__":
    main()
