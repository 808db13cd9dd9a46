"""Regenerate ``bnt_sample.csv``: SYNTHETIC B&T rows in the real CSV export's schema.

No real extract of data.ny.gov ``qzve-kjga`` can be shipped offline, so the sample is generated:
the real header, both plaza-id schemes, and a handful of deliberately invalid rows to show the
rejects table. Counts are made up (deterministic), not MTA figures.
"""

import csv
import hashlib
from datetime import date, timedelta
from pathlib import Path

HEADER = [
    "Plaza ID",
    "Date (MM/DD/YYYY)",
    "Hour",
    "Direction",
    "# Vehicles - E-ZPass",
    "# Vehicles - VToll",
]
PLAZAS = (21, 22, 23, 24, 25, 26, 27, 28, 29, 30)


def count(*key: object) -> int:
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16) % 4000


def main() -> None:
    out = Path(__file__).with_name("bnt_sample.csv")
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        start = date(2024, 3, 1)
        for offset in range(14):
            day = start + timedelta(days=offset)
            for hour in range(24):
                for plaza in PLAZAS:
                    for direction in ("I", "O"):
                        writer.writerow(
                            [
                                plaza,
                                day.strftime("%m/%d/%Y"),
                                hour,
                                direction,
                                count(plaza, day, hour, direction, "ez"),
                                count(plaza, day, hour, direction, "vt"),
                            ]
                        )
        # invalid on purpose: each lands in mta.bnt_traffic_hourly_rejects with its reason
        writer.writerow([21, "03/05/2024", 24, "I", 10, 2])
        writer.writerow([22, "03/05/2024", 3, "X", 10, 2])
        writer.writerow([23, "03/05/2024", 4, "O", "n/a", 2])
        writer.writerow(["", "03/05/2024", 5, "I", 10, 2])


if __name__ == "__main__":
    main()
