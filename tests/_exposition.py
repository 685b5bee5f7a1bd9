"""Reading /metrics with the Prometheus project's own parser (prometheus_client), not with ours: the tests then
check that the server's exposition text is what a real scraper reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    """``{'name{label="value",...}': value}`` for every sample, labels in the order the text gives them."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out
