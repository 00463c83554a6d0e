"""Human-friendly numbers shared by the renderers and the findings' sentences.

One place decides how a duration or a count looks, so the findings, the terminal table, the
HTML page and the SVG tooltips never disagree on what "12.3 ms" means.
"""

from __future__ import annotations

import datetime
from typing import Optional


def fmt_us(us: Optional[float]) -> str:
    """Microseconds as ``850 µs``, ``12.3 ms``, ``4.21 s``, ``2m 47s`` or ``1h 02m``.

    Three significant digits below a minute: enough to compare rows, short enough to fit.
    """
    if us is None:
        return "-"
    value = float(us)
    sign = "-" if value < 0 else ""
    value = abs(value)
    # Thresholds sit where rounding would carry over (999.6 µs is "1.00 ms", not "1000 µs").
    if value < 999.5:
        return f"{sign}{value:.0f} µs"
    if value < 999_500:
        return f"{sign}{_three(value / 1_000)} ms"
    seconds = value / 1_000_000
    if seconds < 59.95:
        return f"{sign}{_three(seconds)} s"
    total = int(round(seconds))
    if total < 3600:
        return f"{sign}{total // 60}m {total % 60:02d}s"
    return f"{sign}{total // 3600}h {total % 3600 // 60:02d}m"


def _three(value: float) -> str:
    """Three significant digits, never in exponent form (999.96 rounds up to 1000)."""
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 9.995:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_count(count: Optional[int]) -> str:
    """A count with thousands separators, or ``-`` when the source had no counts."""
    if count is None:
        return "-"
    return f"{count:,}"


def fmt_share(share: float) -> str:
    """A share of the total as a percentage with one decimal (``<0.1%`` for crumbs)."""
    percent = share * 100
    if 0 < percent < 0.05:
        return "<0.1%"
    return f"{percent:.1f}%"


def fmt_seconds(seconds: Optional[float]) -> str:
    """A duration given in seconds, in the same style as :func:`fmt_us`."""
    if seconds is None:
        return "-"
    return fmt_us(float(seconds) * 1_000_000)


def fmt_timestamp(unix_seconds: object) -> Optional[str]:
    """A unix time as UTC ``YYYY-MM-DD HH:MM:SS UTC``; ``None`` when it is not a number."""
    if isinstance(unix_seconds, bool) or not isinstance(unix_seconds, (int, float)):
        return None
    try:
        moment = datetime.datetime.fromtimestamp(float(unix_seconds), tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def bar(share: float, width: int = 20) -> str:
    """A share as a bar of block characters (eighths), padded with light shade."""
    share = min(max(share, 0.0), 1.0)
    eighths = int(round(share * width * 8))
    full, part = divmod(eighths, 8)
    text = "█" * full
    if part and full < width:
        text += " ▏▎▍▌▋▊▉"[part]
    return text + "·" * (width - len(text))
